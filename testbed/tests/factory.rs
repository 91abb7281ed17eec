//! The per-user manager factory seen from clients: the limit is per user, not global.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn sixth_connection_of_one_user_fails_while_five_users_times_five_pass() {
    let mut c = config();
    c.websocket.max_managers_per_user = 5;
    let tb = start(c).await;

    // 5 users x 5 concurrent connections: all established.
    let mut held = Vec::new();
    for u in 0..5 {
        for _ in 0..5 {
            held.push(established(&tb, &format!("user-{u}")).await);
        }
    }
    // A 6th concurrent connection for user-0: FACTORY_INIT_FAILED, then 1011.
    let mut sixth = connect(&tb, "user-0").await;
    let frame = next_json(&mut sixth).await;
    assert_eq!(frame["error_code"], "FACTORY_INIT_FAILED");
    assert_eq!(
        expect_close(&mut sixth).await,
        (1011, "Factory SSOT validation failed".into())
    );

    let stats = tb.stats();
    assert_eq!(stats.connections.established, 25);
    assert_eq!(stats.connections.rejected["factory_init_failed"], 1);
    assert_eq!(stats.managers.limit_rejections, 1);
    assert_eq!(stats.managers.by_user.len(), 5);
    assert!(
        stats
            .managers
            .by_user
            .values()
            .all(|m| m.live == 5 && m.connected == 5)
    );

    // Sequential reuse never hits the limit: emergency cleanup removes disconnected managers.
    drop(held);
    for _ in 0..12 {
        let mut ws = established(&tb, "solo").await;
        ws.close(None).await.unwrap();
        while let Next::Json(_) = next(&mut ws).await {}
    }
    let stats = tb.stats();
    assert_eq!(stats.connections.rejected["factory_init_failed"], 1);
    assert!(stats.managers.emergency_cleanups > 0);
}
