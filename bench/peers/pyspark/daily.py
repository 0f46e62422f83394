"""The daily job's tables in PySpark, the batch peer of bench/batch.ts (issue 12 section 4).

Reads one raw day as Parquet (the lake's raw schema, duplicates included), de-duplicates it
as the hourly jobs do (of an event_id's copies, the one received first; Kafka position breaks
a tie), then computes the daily tables from those events, each as batch-layer/sql defines it:
sessions (with clicks-to-play and paths), user_daily_activity, binge_users, retention_cohorts,
daily_aggregates_with_dimensions (exact distinct users over its 5 grouping sets),
daily_sessions, clicks_to_play and top_paths. One table is one Parquet directory under --out.

Scope: one day with no earlier day in the lake (no activity history, no late completes of the
previous day), which is what bench/batch.ts generates. Averages are exact sums over counts, as
DuckDB computes them, so the check can ask for equal rows, not close ones.

Prints one JSON line: seconds of the de-duplication (to Parquet), of the daily part (from that
Parquet), and row counts per table.

  python daily.py --input day.parquet --day 2025-02-01 --out DIR [--master local[2]]
"""

import argparse
import datetime
import json
import time

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

# common/contract.ts
SESSION_GAP_MS = 1_800_000
BINGE_WINDOW_MS = 14_400_000
NAVIGATION_TYPES = ["page_view", "click", "search"]

# The daily OBT's grouping sets (daily_aggregates_partial.sql), finest first.
OBT_SETS = "GROUPING SETS ((device_type, app_version, country), (device_type, country), (device_type), (country), ())"


def dedupe(raw):
    w = Window.partitionBy("event_id").orderBy("received_at", "kafka_partition", "kafka_offset")
    return raw.withColumn("__first", F.row_number().over(w)).where("__first = 1").drop("__first")


def sessions(events, day):
    w = Window.partitionBy("user_id").orderBy("ts", "event_id")
    before = w.rowsBetween(Window.unboundedPreceding, -1)
    is_nav = F.col("event_type").isin(NAVIGATION_TYPES)
    ordered = events.select(
        "user_id", "event_type", "ts", "device_type", "app_version", "country",
        F.row_number().over(w).alias("rn"),
        F.when(F.col("ts") - F.lag("ts").over(w) <= SESSION_GAP_MS, 0).otherwise(1).alias("starts"),
        F.coalesce(F.sum(is_nav.cast("long")).over(before), F.lit(0)).alias("nav_before"),
        F.when(F.col("event_type") == "video_play", F.array(*[F.lag("event_type", k).over(w) for k in range(5, 0, -1)])).alias("back5"),
    )
    numbered = ordered.withColumn(
        "session_idx", F.sum("starts").over(Window.partitionBy("user_id").orderBy("rn").rowsBetween(Window.unboundedPreceding, 0))
    )
    # min over a struct led by rn: the first row's fields, NULLs kept (arg_min_null in sessions.sql).
    grouped = numbered.groupBy("user_id", "session_idx").agg(
        F.min("ts").alias("start_ts"),
        F.max("ts").alias("end_ts"),
        F.count(F.lit(1)).alias("events"),
        F.min(F.struct("rn", "device_type", "app_version", "country", "nav_before")).alias("first"),
        F.min(F.when(F.col("event_type") == "video_play", F.struct("rn", "nav_before", "back5"))).alias("first_play"),
    )
    back = F.least(F.col("first_play.rn") - F.col("first.rn"), F.lit(5))
    return grouped.select(
        "user_id",
        F.lit(day).alias("day"),
        F.col("session_idx").cast("int").alias("session_idx"),
        "start_ts",
        "end_ts",
        (F.col("end_ts") - F.col("start_ts")).alias("duration_ms"),
        "events",
        F.col("first.device_type").alias("device_type"),
        F.col("first.app_version").alias("app_version"),
        F.col("first.country").alias("country"),
        F.col("first_play").isNotNull().alias("has_play"),
        (F.col("first_play.nav_before") - F.col("first.nav_before")).alias("clicks_to_play"),
        F.when(F.col("first_play").isNull(), None)
        .when(F.col("first_play.rn") == F.col("first.rn"), "(direct)")
        .otherwise(F.array_join(F.slice(F.col("first_play.back5"), F.lit(6) - back, back), ">"))
        .alias("path"),
    )


def user_daily_activity(events, sess, day):
    today = events.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("events"),
        F.count(F.when(F.col("event_type") == "video_play", 1)).alias("plays"),
        F.count(F.when(F.col("event_type") == "video_complete", 1)).alias("completes"),
        F.min("ts").alias("first_event_ts"),
        F.max("ts").alias("last_event_ts"),
    )
    per_user = sess.groupBy("user_id").agg(F.count(F.lit(1)).alias("sessions"))
    return today.join(per_user, "user_id").select(
        "user_id", F.lit(day).alias("day"), "events", "sessions", "plays", "completes",
        "first_event_ts", "last_event_ts", F.lit(day).alias("first_seen_day"),
    )


def retention_cohorts(activity, day):
    users = activity.groupBy("user_id").agg(
        F.min("day").alias("first_seen"), F.max("day").alias("last_active"), F.collect_set("day").alias("active_days")
    )

    def retained(k):
        after = F.date_add(F.col("first_seen"), k)
        return F.when(F.max(after) <= F.lit(day), F.count(F.when(F.array_contains("active_days", after), 1))).alias(f"retained_d{k}")

    return users.groupBy(F.col("first_seen").alias("cohort_day")).agg(
        F.count(F.lit(1)).alias("cohort_size"),
        *[retained(k) for k in (1, 7, 14, 28)],
        F.count(F.when(F.col("last_active") <= F.date_sub(F.lit(day), 14), 1)).alias("churned"),
    ).select(F.lit(day).alias("as_of_day"), "cohort_day", "cohort_size", "retained_d1", "retained_d7", "retained_d14", "retained_d28", "churned")


def binge_users(events, day, day_start, day_end):
    w = Window.partitionBy("user_id").orderBy("ts", "event_id")
    triples = events.where("event_type = 'video_complete'").select("user_id", "ts", (F.col("ts") - F.lag("ts", 2).over(w)).alias("span_ms"))
    return (
        triples.where((F.col("span_ms") <= BINGE_WINDOW_MS) & (F.col("ts") >= day_start) & (F.col("ts") < day_end))
        .groupBy("user_id")
        .agg(F.min("ts").alias("first_binge_ts"))
        .select(F.lit(day).alias("day"), "user_id", "first_binge_ts")
    )


def daily_obt(spark, day):
    dims = """
      grouping_id(device_type, app_version, country) AS level,
      CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
      CASE WHEN grouping(app_version) = 1 THEN 'ALL' ELSE app_version END AS app_version,
      CASE WHEN grouping(country) = 1 THEN 'ALL' ELSE country END AS country"""
    return spark.sql(f"""
      WITH event_rows AS (
        SELECT {dims},
          count(*) AS total_events,
          count(CASE WHEN event_type = 'app_install' THEN 1 END) AS total_installs,
          count(CASE WHEN event_type = 'page_view' THEN 1 END) AS total_views,
          count(CASE WHEN event_type = 'video_play' THEN 1 END) AS total_plays,
          count(DISTINCT user_id) AS unique_users
        FROM day_events
        GROUP BY {OBT_SETS}
      ),
      session_rows AS (
        SELECT {dims}, count(*) AS total_sessions FROM sessions GROUP BY {OBT_SETS}
      )
      SELECT DATE'{day}' AS day, e.device_type, e.app_version, e.country,
        e.total_events, e.total_installs, e.total_views, e.total_plays,
        coalesce(s.total_sessions, 0) AS total_sessions, e.unique_users
      FROM event_rows e
      LEFT JOIN session_rows s
        ON s.level = e.level AND s.device_type = e.device_type AND s.app_version = e.app_version AND s.country = e.country
    """)


def daily_sessions(spark, day):
    # Averages as exact sums over counts (DuckDB's avg of integers), so both engines give the same double.
    return spark.sql(f"""
      SELECT DATE'{day}' AS day,
        CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
        count(*) AS sessions,
        CAST(sum(duration_ms) AS DOUBLE) / count(*) AS avg_duration_ms,
        median(duration_ms) AS median_duration_ms,
        count(CASE WHEN events = 1 THEN 1 END) / count(*) AS bounce_rate,
        CAST(sum(events) AS DOUBLE) / count(*) AS avg_events_per_session
      FROM sessions
      GROUP BY GROUPING SETS ((), (device_type))
      HAVING count(*) > 0
    """)


def clicks_to_play(spark, day):
    buckets = ",\n".join(f"count(CASE WHEN clicks_to_play = {k} THEN 1 END) AS clicks_{k}" for k in range(10))
    return spark.sql(f"""
      SELECT DATE'{day}' AS day,
        count(CASE WHEN has_play THEN 1 END) AS play_sessions,
        count(CASE WHEN NOT has_play THEN 1 END) AS no_play_sessions,
        CAST(sum(clicks_to_play) AS DOUBLE) / count(clicks_to_play) AS avg_clicks_to_play,
        {buckets},
        count(CASE WHEN clicks_to_play >= 10 THEN 1 END) AS clicks_10_plus
      FROM sessions
    """)


def top_paths(spark, day):
    return spark.sql(f"""
      SELECT DATE'{day}' AS day, CAST(row_number() OVER (ORDER BY sessions DESC, path) AS INT) AS rank, path, sessions
      FROM (SELECT path, count(*) AS sessions FROM sessions WHERE has_play GROUP BY path)
      ORDER BY rank
      LIMIT 20
    """)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="the raw day as Parquet (a file or a directory)")
    p.add_argument("--day", required=True, help="YYYY-MM-DD")
    p.add_argument("--out", required=True, help="directory for one Parquet directory per table")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--shuffle-partitions", default="8")
    a = p.parse_args()

    day = datetime.date.fromisoformat(a.day)
    day_start = int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    day_end = day_start + 86_400_000
    spark = (
        SparkSession.builder.master(a.master)
        .appName("peer-daily")
        .config("spark.driver.memory", a.driver_memory)
        .config("spark.sql.shuffle.partitions", a.shuffle_partitions)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    out = a.out.rstrip("/")

    t0 = time.perf_counter()
    events_dir = f"{out}/events"
    raw = spark.read.parquet(a.input).where((F.col("ts") >= day_start) & (F.col("ts") < day_end))
    dedupe(raw).write.mode("overwrite").parquet(events_dir)
    t1 = time.perf_counter()

    events = spark.read.parquet(events_dir).select("event_id", "event_type", "user_id", "ts", "device_type", "app_version", "country").cache()
    events.createOrReplaceTempView("day_events")
    sess = sessions(events, day).cache()
    sess.createOrReplaceTempView("sessions")
    activity = user_daily_activity(events, sess, day).cache()
    tables = {
        "sessions": sess,
        "user_daily_activity": activity,
        "binge_users": binge_users(events, day, day_start, day_end),
        "retention_cohorts": retention_cohorts(activity.select("user_id", "day"), day),
        "daily_aggregates_with_dimensions": daily_obt(spark, day),
        "daily_sessions": daily_sessions(spark, day),
        "clicks_to_play": clicks_to_play(spark, day),
        "top_paths": top_paths(spark, day),
    }
    rows = {}
    for name, df in tables.items():
        df.write.mode("overwrite").parquet(f"{out}/{name}")
        rows[name] = spark.read.parquet(f"{out}/{name}").count()
    t2 = time.perf_counter()
    print(json.dumps({"dedupeSeconds": round(t1 - t0, 2), "dailySeconds": round(t2 - t1, 2), "rowCounts": rows}))
    spark.stop()


if __name__ == "__main__":
    main()
