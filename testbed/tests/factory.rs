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

/// A ping answered: the connection is in its message loop, so its confirmation is counted.
async fn ping(ws: &mut Ws) {
    send_json(ws, serde_json::json!({"type": "ping"})).await;
    assert_eq!(next_json(ws).await["type"], "pong");
}

#[tokio::test]
async fn per_user_totals_count_connections_established_refused_and_runs() {
    use gauntlet_testbed::config::RejectionMode;
    use gauntlet_testbed::stats::UserTotals;

    for mode in [
        RejectionMode::AcceptThenClose,
        RejectionMode::RejectHandshake,
    ] {
        let mut c = config();
        c.websocket.max_managers_per_user = 2;
        c.auth.rejection = mode;
        c.faults = serde_json::from_value(serde_json::json!({
            "auth_reject": { "rate": 1.0, "users": { "subjects": ["c"] } },
        }))
        .unwrap();
        let tb = start(c).await;

        // User a: two connections held, a third refused by the limit, one agent run.
        let mut a1 = established(&tb, "a").await;
        let mut a2 = established(&tb, "a").await;
        let mut third = connect(&tb, "a").await;
        assert_eq!(
            next_json(&mut third).await["error_code"],
            "FACTORY_INIT_FAILED"
        );
        send_json(&mut a1, serde_json::json!({"type": "start_agent"})).await;
        while next_json(&mut a1).await["type"] != "agent_completed" {}
        ping(&mut a2).await;
        // User b: one connection. User c: refused by the injected auth rejection.
        let mut b = established(&tb, "b").await;
        ping(&mut b).await;
        match mode {
            RejectionMode::AcceptThenClose => {
                let mut ws = connect(&tb, "c").await;
                assert_eq!(next_json(&mut ws).await["error_code"], "AUTH_FAILED");
                assert_eq!(expect_close(&mut ws).await.0, 1008);
            }
            RejectionMode::RejectHandshake => {
                let refused = connect_with(&tb, Some(&token("c")), Placement::Header, "").await;
                assert!(refused.is_err(), "{mode:?}");
            }
        }
        // No token and a bad signature name no user.
        let _ = connect_with(&tb, None, Placement::Header, "").await;
        let _ = connect_with(&tb, Some("not.a.jwt"), Placement::Header, "").await;

        let users = tb.stats().users;
        let totals = |connections, established, rejected, pipelines| UserTotals {
            connections,
            established,
            rejected,
            pipelines,
        };
        assert_eq!(users.len(), 3, "{mode:?}: {users:?}");
        assert_eq!(users["a"], totals(3, 2, 1, 1), "{mode:?}");
        assert_eq!(users["b"], totals(1, 1, 0, 0), "{mode:?}");
        assert_eq!(users["c"], totals(1, 0, 1, 0), "{mode:?}");
        drop((a1, a2, b));
    }
}
