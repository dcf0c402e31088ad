//! The Kafka queue: one message per job on `APP_ENV_KAFKA_TOPIC` (key merchantId, value
//! `{"ledgerId":"…"}`), consumed by a consumer group. Offsets are committed by hand, only
//! after the job reached a terminal state or was dropped as a duplicate, so a committed
//! message is never replayed and an uncommitted one is harmless (the claim is atomic).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Consumer, Delivery, JobMessage, Position, Queue, QueueError};
use crate::domain::LedgerId;

/// How long a publish may wait for the broker before the create answers 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(10);
/// How long a closing consumer waits for each of its steps (the lag reporter's last
/// measurement, the broker's answer to LeaveGroup) before it goes on without it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub use crate::config::KafkaSettings;

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "ledger");
        c.set("socket.connection.setup.timeout.ms", "5000");
        // librdkafka's 60 s default also bounds how long a client takes to close while a
        // broker is unreachable.
        c.set("socket.timeout.ms", "10000");
        if let Some(p) = &self.security_protocol {
            c.set("security.protocol", p);
        }
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        c
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    ledger_id: LedgerId,
}

/// The Kafka queue.
pub struct KafkaQueue {
    settings: KafkaSettings,
    producer: FutureProducer,
    shutdown: CancellationToken,
}

impl KafkaQueue {
    /// Connects a producer and creates the topic when it is missing.
    pub async fn connect(
        settings: KafkaSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, QueueError> {
        let producer: FutureProducer = settings
            .client_config()
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .set("acks", "all")
            .create()
            .map_err(|e| QueueError::Backend(format!("creating the Kafka producer: {e}")))?;
        let me = Self {
            settings,
            producer,
            shutdown,
        };
        if let Err(e) = me.ensure_topic().await {
            // The broker may be down at start: publishing and /readyz report it.
            tracing::warn!(error = %e, topic = %me.settings.topic, "could not make sure the Kafka topic exists");
        }
        Ok(me)
    }

    async fn ensure_topic(&self) -> Result<(), QueueError> {
        let admin: AdminClient<DefaultClientContext> =
            self.settings.client_config().create().map_err(|e| {
                QueueError::Backend(format!("creating the Kafka admin client: {e}"))
            })?;
        let topic = NewTopic::new(
            &self.settings.topic,
            self.settings.partitions,
            TopicReplication::Fixed(1),
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| QueueError::Backend(format!("creating topic: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(QueueError::Backend(format!(
                        "creating topic {name}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn enqueue(&self, message: &JobMessage) -> Result<(), QueueError> {
        let payload = serde_json::to_string(&Payload {
            ledger_id: message.ledger_id,
        })
        .map_err(|e| QueueError::Backend(e.to_string()))?;
        // A redelivery gets a key of its own each time, so it most likely lands on another
        // partition than its merchant's (each sweep draws again) should that one have no
        // live consumer.
        let key = if message.redelivery {
            format!(
                "{}#{}#{}",
                message.merchant_id,
                message.ledger_id,
                chrono::Utc::now().timestamp_millis()
            )
        } else {
            message.merchant_id.as_str().to_owned()
        };
        let record = FutureRecord::to(&self.settings.topic)
            .key(&key)
            .payload(&payload);
        self.producer
            .send(record, PUBLISH_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| QueueError::Backend(format!("publishing to Kafka: {e}")))
    }

    async fn ready(&self) -> Result<(), QueueError> {
        let producer = self.producer.clone();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| QueueError::Backend(format!("Kafka metadata: {e}")))
        })
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))?
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        let consumer: JobConsumer = self
            .settings
            .client_config()
            .set("group.id", &self.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A joining or leaving worker moves only the partitions that must move.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A worker that died gives its partitions up after 10 s, not librdkafka's 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            // A consumer polls again only when its job ended, and this is also how long the
            // group coordinator may wait for members to rejoin a rebalance. 5 minutes lets
            // the largest ledgers finish between polls while bounding a rebalance that a
            // departed member stalls (with 30 minutes, a rolling restart under load left a
            // partition unassigned for minutes on tansu; the sweep's redelivery under a
            // fresh key is the backstop). A job longer than this costs one rebalance: the
            // late commit fails and is logged ([`CommitReport`]), and the redelivered
            // message is dropped as a duplicate by the claim.
            .set("max.poll.interval.ms", "300000")
            .create_with_context(CommitReport)
            .map_err(|e| QueueError::Backend(format!("creating the Kafka consumer: {e}")))?;
        consumer
            .subscribe(&[&self.settings.topic])
            .map_err(|e| QueueError::Backend(format!("subscribing: {e}")))?;
        let consumer = Arc::new(consumer);
        let stop_lag = self.shutdown.child_token();
        let lag = tokio::spawn(report_lag(consumer.clone(), stop_lag.clone()));
        Ok(Box::new(KafkaConsumer {
            consumer: Some(consumer),
            topic: self.settings.topic.clone(),
            lag: Some((stop_lag, lag)),
        }))
    }
}

/// A consumer whose offset commits, sent without waiting ([`KafkaConsumer::ack`]), report
/// their failures to the log.
type JobConsumer = StreamConsumer<CommitReport>;

/// Logs a commit the broker refused (after a rebalance moved the partition, say): the
/// message comes back and is dropped as not PENDING, so nothing is lost, but an operator
/// seeing many of these has consumers that lose their partitions.
struct CommitReport;

impl rdkafka::ClientContext for CommitReport {}

impl ConsumerContext for CommitReport {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            let at: Vec<String> = offsets
                .elements()
                .iter()
                .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
                .collect();
            tracing::warn!(error = %e, offsets = %at.join(","),
                "a Kafka offset commit failed; its messages will be delivered again and dropped as duplicates");
        }
    }
}

struct KafkaConsumer {
    /// `None` once closed.
    consumer: Option<Arc<JobConsumer>>,
    topic: String,
    /// The lag reporter, which holds the consumer too, and what stops it.
    lag: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// A consumer dropped without [`Consumer::close`] (its task was cancelled, the runtime
/// shut down): librdkafka's close, which `BaseConsumer`'s drop runs and which can block on
/// a rebalance for ever, goes to a thread of its own, never the runtime's.
impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.lag.take() {
            stop.cancel();
            task.abort();
        }
        if let Some(consumer) = self.consumer.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

impl KafkaConsumer {
    fn open(&self) -> Result<&Arc<JobConsumer>, QueueError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| QueueError::Backend("the Kafka consumer is closed".into()))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        let message = self
            .open()?
            .recv()
            .await
            .map_err(|e| QueueError::Backend(format!("receiving from Kafka: {e}")))?;
        let position = Some(Position {
            partition: message.partition(),
            offset: message.offset(),
        });
        let ledger_id = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Payload>(p).ok())
            .map(|p| p.ledger_id);
        Ok(Delivery {
            ledger_id,
            position,
        })
    }

    async fn ack(&mut self, delivery: Delivery) -> Result<(), QueueError> {
        let Some(position) = delivery.position else {
            return Ok(());
        };
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.topic,
                position.partition,
                Offset::Offset(position.offset + 1),
            )
            .map_err(|e| QueueError::Backend(e.to_string()))?;
        // Sent without waiting for the broker's answer: the job's outcome is in the store
        // already, so a commit lost in a crash only replays the message, and the replay is
        // dropped (the job is no longer PENDING). Waiting cost each job a round trip to the
        // broker on a blocking thread.
        self.open()?
            .commit(&offsets, CommitMode::Async)
            .map_err(|e| QueueError::Backend(format!("committing the offset: {e}")))
    }

    /// Leaves the group, and returns once the broker answered (or after [`CLOSE_WAIT`]):
    /// the partitions move to the other members at once instead of after the session
    /// timeout, and a process started next (a restart, a rolling upgrade) joins a group
    /// this one has left (before, the lag reporter could keep the consumer in its group
    /// past shutdown).
    async fn close(&mut self) {
        if let Some((stop, task)) = self.lag.take() {
            stop.cancel();
            if tokio::time::timeout(CLOSE_WAIT, task).await.is_err() {
                tracing::warn!("the Kafka lag reporter did not stop in time");
            }
        }
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        match Arc::try_unwrap(consumer) {
            // Dropping the last handle closes the consumer (librdkafka's
            // `rd_kafka_consumer_close`): it revokes its partitions, sends LeaveGroup and
            // polls until that is done, without a bound of its own — so on a thread of its
            // own, waited for at most CLOSE_WAIT (a broker that is down does not hold the
            // shutdown; the session timeout then frees the partitions).
            Ok(consumer) => {
                let (done, closed) = tokio::sync::oneshot::channel::<()>();
                let spawned = std::thread::Builder::new()
                    .name("kafka-close".into())
                    .spawn(move || {
                        drop(consumer);
                        let _ = done.send(());
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "no thread to close the Kafka consumer on");
                } else if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
                    tracing::warn!(
                        "the Kafka consumer did not leave its group within 10 s; it goes on \
                         closing in the background (or its session times out)"
                    );
                }
            }
            Err(shared) => {
                tracing::warn!(
                    "the Kafka consumer is still in use at shutdown; it leaves its group when released"
                );
                drop(shared);
            }
        }
    }
}

/// Exports `ledger_kafka_consumer_lag{partition}` for the partitions this consumer holds,
/// and 0 for those it held before a rebalance took them away (the new holder reports them),
/// so a sum over every process counts each partition once.
async fn report_lag(consumer: Arc<JobConsumer>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_EVERY);
    let mut held: std::collections::HashSet<i32> = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || measure_lag(&c))
            .await
            .unwrap_or_default();
        let now: std::collections::HashSet<i32> = lags.iter().map(|(p, _)| *p).collect();
        for gone in held.difference(&now) {
            metrics::gauge!("ledger_kafka_consumer_lag", "partition" => gone.to_string()).set(0.0);
        }
        for (partition, lag) in lags {
            metrics::gauge!("ledger_kafka_consumer_lag", "partition" => partition.to_string())
                .set(lag as f64);
        }
        held = now;
    }
}

/// Messages behind the end of each partition this consumer holds: from its position, or,
/// before it read anything there in this session, from where it will resume — the group's
/// committed offset, else the partition's start.
fn measure_lag(c: &JobConsumer) -> Vec<(i32, i64)> {
    let mut lags = Vec::new();
    let Ok(positions) = c.position() else {
        return lags;
    };
    let committed = c
        .committed_offsets(positions.clone(), Duration::from_secs(2))
        .ok();
    for element in positions.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = c.fetch_watermarks(topic, partition, Duration::from_secs(2)) else {
            continue;
        };
        let resume = |offset: Offset| match offset {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let from = resume(element.offset())
            .or_else(|| {
                committed
                    .as_ref()
                    .and_then(|t| t.find_partition(topic, partition))
                    .and_then(|e| resume(e.offset()))
            })
            .unwrap_or(low);
        lags.push((partition, (high - from).max(0)));
    }
    lags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobStore;
    use crate::store::sqlite::SqliteStore;

    /// The broker of the test suite (tansu, started by `scripts/run-tests.sh`).
    pub fn test_brokers() -> String {
        std::env::var("LEDGER_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
    }

    fn settings() -> KafkaSettings {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        KafkaSettings {
            brokers: test_brokers(),
            topic: format!("ledger.test.{unique}"),
            group_id: format!("ledger-test-{unique}"),
            consumer_count: 1,
            partitions: 3,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
        }
    }

    /// A queue on the test broker, once the broker answers.
    async fn ready_queue(settings: KafkaSettings) -> KafkaQueue {
        let queue = KafkaQueue::connect(settings, CancellationToken::new())
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Err(e) = queue.ready().await {
            assert!(
                std::time::Instant::now() < deadline,
                "no Kafka broker at {} ({e}); scripts/run-tests.sh starts one (tansu)",
                test_brokers()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        queue
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kafka_queue_meets_the_contract() {
        let queue = ready_queue(settings()).await;
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        super::super::contract::run_all(Arc::new(queue), Arc::new(store) as Arc<dyn JobStore>)
            .await;
    }

    fn job(id: i64) -> JobMessage {
        JobMessage {
            ledger_id: LedgerId::from_i64(id),
            merchant_id: crate::domain::MerchantId::parse("m_1").unwrap(),
            redelivery: false,
        }
    }

    /// The members of `group` the broker knows.
    async fn members(queue: &KafkaQueue, group: &str) -> usize {
        let producer = queue.producer.clone();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            let list = producer
                .client()
                .fetch_group_list(Some(&group), Duration::from_secs(5))
                .expect("listing the group");
            list.groups()
                .iter()
                .find(|g| g.name() == group)
                .map_or(0, |g| g.members().len())
        })
        .await
        .unwrap()
    }

    /// A worker that stops has left its group when its consumer's close returns, so the
    /// process that replaces it (a restart, a rolling upgrade) is not joining a group the
    /// old one is still leaving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_consumer_has_left_its_group() {
        let settings = settings();
        let group = settings.group_id.clone();
        let queue = ready_queue(settings).await;
        let mut first = queue.consumer().await.unwrap();
        queue.enqueue(&job(1)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), first.next())
            .await
            .expect("the first consumer got no message")
            .unwrap();
        assert_eq!(got.ledger_id, Some(LedgerId::from_i64(1)));
        first.ack(got).await.unwrap();
        assert_eq!(members(&queue, &group).await, 1);
        first.close().await;
        assert_eq!(
            members(&queue, &group).await,
            0,
            "the consumer was still in its group after close"
        );
        assert!(first.next().await.is_err(), "a closed consumer receives");

        let mut second = queue.consumer().await.unwrap();
        queue.enqueue(&job(2)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), second.next())
            .await
            .expect("the next consumer of the group got no message")
            .unwrap();
        assert_eq!(got.ledger_id, Some(LedgerId::from_i64(2)));
        second.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_closes_in_bounded_time_with_the_broker_down() {
        let mut s = settings();
        s.brokers = "127.0.0.1:9".into();
        let queue = KafkaQueue::connect(s, CancellationToken::new())
            .await
            .unwrap();
        let mut consumer = queue.consumer().await.unwrap();
        // An error (the broker is unreachable) or nothing: never a message.
        assert!(
            !matches!(
                tokio::time::timeout(Duration::from_secs(2), consumer.next()).await,
                Ok(Ok(_))
            ),
            "a message from no broker"
        );
        let started = std::time::Instant::now();
        consumer.close().await;
        assert!(
            started.elapsed() < CLOSE_WAIT * 2 + Duration::from_secs(2),
            "closing took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_is_down_fails_the_publish_in_bounded_time() {
        let mut s = settings();
        s.brokers = "127.0.0.1:9".into();
        let queue = KafkaQueue::connect(s, CancellationToken::new())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(queue.enqueue(&job(1)).await.is_err());
        assert!(queue.ready().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
