//! MQTT over TLS: connections to the TLS listener are decrypted and relayed to the plain
//! listener over loopback, so rumqttd serves them like any other (one TLS stack, rustls
//! 0.23, for the whole server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A handshake must complete within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections on `listen` and relays each to `plain`, for ever.
pub(crate) async fn terminate(
    listen: SocketAddr,
    plain: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) {
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => return tracing::error!(%error, %listen, "Cannot listen for MQTT over TLS."),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "Cannot accept an MQTT/TLS connection.");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut client =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        return tracing::debug!(%error, %peer, "MQTT/TLS handshake failed.");
                    }
                    Err(_) => return tracing::debug!(%peer, "MQTT/TLS handshake timed out."),
                };
            let mut broker = match TcpStream::connect(plain).await {
                Ok(stream) => stream,
                Err(error) => {
                    return tracing::warn!(%error, %plain, "Cannot reach the plain MQTT listener.");
                }
            };
            let _ = broker.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
        });
    }
}
