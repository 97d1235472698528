//! Looking at what exists without scanning the keyspace: the topic registry.

use async_trait::async_trait;

use super::RedisBackend;
use super::conn::Conn;
use super::keys;
use crate::backend::Inspection;
use crate::error::Result;
use crate::name::TopicName;

impl RedisBackend {
    /// Adds `topic` to the registry, once per topic for this backend (the set is not in
    /// the topic's slot, so it is a command of its own).
    pub(super) async fn register_topic(&self, conn: &mut Conn, topic: &TopicName) -> Result<()> {
        if super::lock(&self.inner.registered).contains(topic) {
            return Ok(());
        }
        let _: i64 = redis::cmd("SADD")
            .arg(keys::topics(&self.inner.prefix))
            .arg(topic.as_str())
            .query_async(conn)
            .await?;
        super::lock(&self.inner.registered).insert(topic.clone());
        Ok(())
    }
}

#[async_trait]
impl Inspection for RedisBackend {
    async fn topics(&self) -> Result<Vec<TopicName>> {
        let mut conn = self.conn()?;
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::topics(&self.inner.prefix))
            .query_async(&mut conn)
            .await?;
        let mut topics: Vec<TopicName> = names
            .into_iter()
            .filter_map(|n| TopicName::new(n).ok())
            .collect();
        topics.sort();
        Ok(topics)
    }
}
