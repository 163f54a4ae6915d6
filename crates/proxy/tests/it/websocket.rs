//! WebSocket upgrades are tunnelled: the handshake reaches the upstream with the injected
//! credential, then frames flow both ways until either side closes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use latchkey_proxy::ConnectionKind;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{CANARY_KEY, Proxy, eventually, open_tunnel};

#[tokio::test]
async fn a_websocket_echo_works_through_the_proxy() {
    let proxy = Proxy::start().await;
    let mut socket = open_tunnel(&proxy).await;

    socket
        .send(Message::text("hello"))
        .await
        .expect("send text");
    let reply = socket.next().await.expect("a reply").expect("frame");
    assert_eq!(reply, Message::text("echo: hello"));
    socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    let reply = socket.next().await.expect("a reply").expect("frame");
    assert_eq!(reply, Message::binary(vec![1u8, 2, 3]));

    let live = proxy.connections.list();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].kind, ConnectionKind::WebSocket);
    assert!(
        live[0].bytes_in > 0 && live[0].bytes_out > 0,
        "{:?}",
        live[0]
    );

    let seen = proxy.upstream.last();
    assert_eq!(
        seen.headers["x-api-key"], CANARY_KEY,
        "the handshake carried the credential"
    );
    assert!(seen.headers.get("x-latchkey-client").is_none());

    socket.close(None).await.expect("close");
    while let Some(Ok(frame)) = socket.next().await {
        if frame.is_close() {
            break;
        }
    }
    drop(socket);
    let closed = eventually(Duration::from_secs(5), || proxy.connections.is_empty()).await;
    assert!(closed, "the tunnel ended when the client closed");
    proxy.stop().await;
}
