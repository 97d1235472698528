//! The conformance suites (bus and jobs) under an ACL user that may touch only rivulet's keys
//! (`RedisBackend::acl_rules("rivulet")`) and run only the commands rivulet uses: the
//! suite passing proves rivulet reads and writes nothing else. Channels are open
//! (`allchannels`): Redis matches pattern subscriptions literally against `&` rules,
//! and the suite's live channels have generated names. At the end of each test the ACL
//! log must hold no denial.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;
#[macro_use]
mod jobs;
#[macro_use]
mod admin;

use std::future::Future;
use std::pin::Pin;

use rivulet::{AnyBackend, RedisBackend};
use rivulet_testkit::RedisServer;

const USER: &str = "rivulet-app";
const PASSWORD: &str = "acl/pass?w#rd";

struct Acl {
    server: RedisServer,
}

impl conformance::Fixture for Acl {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let url = self.server.url_for_user(USER).expect("the ACL user");
        Box::pin(async move {
            RedisBackend::connect(&url)
                .await
                .expect("connect as the ACL user")
                .into()
        })
    }
}

impl Drop for Acl {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut con = self.server.connection().expect("admin connection");
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query(&mut con)
            .expect("ACL LOG");
        assert!(log.is_empty(), "ACL denials: {log:?}");
    }
}

async fn fixture() -> Acl {
    let server = tokio::task::spawn_blocking(|| {
        let mut rules = RedisBackend::acl_rules("rivulet");
        rules.extend(["resetchannels".to_owned(), "allchannels".to_owned()]);
        RedisServer::builder()
            .acl_user(USER, PASSWORD, &rules)
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("start redis-server with an ACL user");
    Acl { server }
}

conformance_suite!(fixture());
admin_suite!(fixture());
jobs_suite!(fixture());
schedulers_suite!(fixture());
flows_suite!(fixture());
limits_suite!(fixture());
