package peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The speed layer's per-minute event counts in Kafka Streams, the peer of speed-layer/fold.ts:
 * each event of the raw topic (JSON, as the collector writes it) counts once under its
 * minute x event_type x device_type x country and under the 7 roll-ups where any of the three
 * is ALL, in a RocksDB store with its changelog, exactly_once_v2. No de-duplication, no
 * second buckets, no distinct users or playback counters: it does less than the speed layer.
 *
 *   java -jar peer-streams.jar BOOTSTRAP TOPIC APPLICATION_ID THREADS STATE_DIR
 *
 * Runs until SIGTERM; bench/catchup.ts times it by the group's committed offsets.
 */
public final class MinuteCounts {
  private static final String ALL = "ALL";
  private static final long MINUTE_MS = 60_000L;

  public static void main(String[] args) throws Exception {
    if (args.length != 5) {
      System.err.println("usage: MinuteCounts BOOTSTRAP TOPIC APPLICATION_ID THREADS STATE_DIR");
      System.exit(2);
    }
    Properties p = new Properties();
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[2]);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[3]));
    p.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    ObjectMapper json = new ObjectMapper();
    StreamsBuilder b = new StreamsBuilder();
    b.stream(args[1], Consumed.with(Serdes.String(), Serdes.String()))
        .flatMap((key, value) -> {
          List<KeyValue<String, String>> out = new ArrayList<>(8);
          JsonNode e;
          try {
            e = json.readTree(value);
          } catch (Exception err) {
            return out; // the collector only writes valid events; nothing to count otherwise
          }
          long minute = Math.floorDiv(e.path("ts").asLong(), MINUTE_MS) * MINUTE_MS;
          String[] type = {e.path("event_type").asText(), ALL};
          String[] device = {e.path("device_type").asText(), ALL};
          String[] country = {e.path("country").asText(), ALL};
          for (String t : type) for (String d : device) for (String c : country) out.add(KeyValue.pair(minute + "|" + t + "|" + d + "|" + c, ""));
          return out;
        })
        .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("minute-counts"));

    KafkaStreams streams = new KafkaStreams(b.build(), p);
    // On SIGTERM: 0 after a clean close (its transactions committed), 1 otherwise, like the project's mains.
    Runtime.getRuntime().addShutdownHook(new Thread(() -> Runtime.getRuntime().halt(streams.close(Duration.ofSeconds(60)) ? 0 : 1)));
    streams.setUncaughtExceptionHandler(err -> {
      System.err.println("stream thread failed: " + err);
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.start();
    Thread.currentThread().join();
  }
}
