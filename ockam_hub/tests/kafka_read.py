"""Reads a topic's partition 0 from its beginning and a consumer group's
committed offset on it, with kafka-python: what an ordinary Kafka tool sees
of what the hub stored. Prints `MSG <offset> <hex>` per message, then
`COMMITTED <offset>` (or `COMMITTED none`).

Usage: kafka_read.py <bootstrap> <topic> <group>
"""
import sys

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, group = sys.argv[1:4]
tp = TopicPartition(topic, 0)

consumer = KafkaConsumer(
    bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
end = consumer.end_offsets([tp])[tp]
while consumer.position(tp) < end:
    for record in consumer.poll(timeout_ms=1000).get(tp, []):
        print("MSG", record.offset, (record.value or b"").hex())
consumer.close()

group_client = KafkaConsumer(
    bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
)
committed = group_client.committed(tp)
print("COMMITTED", committed if committed is not None and committed >= 0 else "none")
group_client.close()
