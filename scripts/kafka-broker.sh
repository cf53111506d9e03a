#!/usr/bin/env bash
# Real single-node Apache Kafka broker (KRaft, no ZooKeeper, no Docker), assembled from Maven Central jars.
#
# Usage: scripts/kafka-broker.sh {fetch|start|stop|status|env}
#   fetch   download the broker jars once into $INFERWATCH_CACHE/kafka/libs-<version>/ (default: <repo>/.cache)
#   start   format a fresh run dir, start the broker in the background, print its bootstrap address
#           (127.0.0.1:<port>) once "Kafka Server started" is logged; reuses a broker already running there
#   stop    SIGTERM, wait up to 30 s, then SIGKILL
#   status  exit 0 if the broker of the run dir is running, 1 otherwise
#   env     print `export INFERWATCH_BOOTSTRAP=...` for a running broker: eval "$(scripts/kafka-broker.sh env)"
#
# Environment:
#   INFERWATCH_CACHE          cache root (default <repo>/.cache)
#   INFERWATCH_KAFKA_RUN_DIR  run dir: config, data, logs, pid (default $INFERWATCH_CACHE/kafka/run)
#   KAFKA_PORT                PLAINTEXT port (default: a free port); KAFKA_CONTROLLER_PORT likewise
#   KAFKA_HEAP_OPTS           JVM heap (default -Xms128m -Xmx512m)
#   KAFKA_START_TIMEOUT       seconds to wait for readiness (default 60)
set -euo pipefail

KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3
SLF4J_VERSION=1.7.36
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${INFERWATCH_CACHE:-$ROOT/.cache}"
LIBS="$CACHE/kafka/libs-$KAFKA_VERSION"
RUN="${INFERWATCH_KAFKA_RUN_DIR:-$CACHE/kafka/run}"
[[ "$RUN" == /* ]] || RUN="$PWD/$RUN" # absolute: it is part of the command line the pid check matches
MARKER=.inferwatch-kafka-run # written into every run dir we create; we only ever wipe dirs carrying it
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT=30

log() { printf 'kafka-broker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

check_java() {
    need java "Java 17+ is required by Kafka $KAFKA_VERSION"
    local v
    v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
    [[ "$v" =~ ^[0-9]+$ && "$v" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found java ${v:-unknown}"
}

# ---------------------------------------------------------------------------------------------- fetch

fetch() {
    [[ -f "$LIBS/.complete" ]] && return 0
    need mvn "used once to copy the broker jars from Maven Central"
    check_java
    mkdir -p "$CACHE/kafka"
    # Serialise concurrent fetches (e.g. two test sessions on a fresh machine).
    exec 9>"$CACHE/kafka/.fetch.lock"
    flock 9
    if [[ -f "$LIBS/.complete" ]]; then exec 9>&-; return 0; fi

    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS ..."
    local tmp start
    start=$SECONDS
    tmp="$(mktemp -d "$CACHE/kafka/.libs-tmp.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>inferwatch</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    if ! mvn -B -q -f "$tmp/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
        tail -n 40 "$tmp/mvn.log" >&2
        die "mvn copy-dependencies failed (is Maven Central reachable?)"
    fi
    local n
    n="$(find "$tmp/libs" -name '*.jar' | wc -l)"
    [[ "$n" -ge 20 ]] || die "expected ~40-50 jars, got $n in $tmp/libs"
    if ! java -cp "$tmp/libs/*" kafka.tools.StorageTool random-uuid >/dev/null 2>"$tmp/check.log"; then
        cat "$tmp/check.log" >&2
        die "the fetched classpath does not run kafka.tools.StorageTool"
    fi
    touch "$tmp/libs/.complete"
    rm -rf "$LIBS"
    mv -T "$tmp/libs" "$LIBS"
    rm -rf "$tmp"
    trap - EXIT
    exec 9>&-
    log "fetched $n jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------------------------------------- process

# Prints the pid of the broker of $RUN if it is alive (and really is that broker), else fails.
running_pid() {
    local pid
    [[ -f "$RUN/pid" ]] || return 1
    pid="$(<"$RUN/pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the command line must be a kafka.Kafka using this run dir's config.
    ps -p "$pid" -o args= 2>/dev/null | grep -qF "kafka.Kafka $RUN/server.properties" || return 1
    printf '%s\n' "$pid"
}

free_port() {
    # Bind to port 0 on 127.0.0.1 and report what the kernel picked. $1: a port to avoid.
    python3 - "${1:-0}" <<'PY'
import socket, sys
avoid = int(sys.argv[1])
while True:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port != avoid:
        print(port)
        break
PY
}

port_in_use() {
    python3 - "$1" <<'PY'
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

fresh_run_dir() {
    if [[ -d "$RUN" ]]; then
        if [[ -f "$RUN/$MARKER" ]]; then
            rm -rf "$RUN"
        elif [[ -n "$(ls -A "$RUN")" ]]; then
            die "run dir $RUN exists, is not empty and was not made by this script; refusing to wipe it"
        fi
    fi
    mkdir -p "$RUN/data" "$RUN/logs"
    touch "$RUN/$MARKER"
}

write_config() {
    local port=$1 cport=$2
    cat >"$RUN/server.properties" <<EOF
# Written by scripts/kafka-broker.sh: single-node KRaft broker for tests and the demo.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# The default allocates 128 MiB of heap at start-up.
log.cleaner.dedupe.buffer.size=2097152
num.network.threads=2
num.io.threads=2
EOF
    # Quoted heredoc: ${sys:kafka.logs.dir} must stay literal for log4j.
    cat >"$RUN/log4j2.properties" <<'EOF'
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
}

jvm_opts() { # $1: logs dir
    # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS is a word list by design
    JVM=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1
        -Djava.awt.headless=true "-Dkafka.logs.dir=$1" "-Dlog4j2.configurationFile=$RUN/log4j2.properties")
}

start() {
    local pid
    if pid="$(running_pid)" && [[ -s "$RUN/bootstrap" ]]; then
        log "already running (pid $pid)"
        cat "$RUN/bootstrap"
        return 0
    fi
    fetch
    check_java
    need python3 "used to pick free ports and a cluster id"

    local port cport cid start=$SECONDS
    if [[ -n "${KAFKA_PORT:-}" ]]; then
        port=$KAFKA_PORT
        ! port_in_use "$port" || die "KAFKA_PORT=$port is already in use on 127.0.0.1"
    else
        port="$(free_port)"
    fi
    cport="${KAFKA_CONTROLLER_PORT:-$(free_port "$port")}"
    [[ "$port" != "$cport" ]] || die "broker and controller ports must differ ($port)"

    fresh_run_dir
    write_config "$port" "$cport"
    cid="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"

    jvm_opts "$RUN/logs/format"
    if ! java "${JVM[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format --cluster-id="$cid" \
        -c "$RUN/server.properties" >"$RUN/logs/format.out" 2>&1; then
        cat "$RUN/logs/format.out" >&2
        die "formatting storage in $RUN/data failed"
    fi

    jvm_opts "$RUN/logs"
    # Detached from our stdin/stdout/stderr (so callers capturing our output do not wait on the broker)
    # and from SIGHUP; SIGTERM (stop) shuts it down cleanly.
    nohup java "${JVM[@]}" -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" \
        </dev/null >"$RUN/logs/stdout.log" 2>&1 &
    pid=$!
    disown "$pid" # not our job to reap or report on
    echo "$pid" >"$RUN/pid"

    local deadline=$((SECONDS + START_TIMEOUT))
    until grep -qs 'Kafka Server started' "$RUN/logs/server.log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            fail_start "broker process $pid exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            fail_start "broker not ready after ${START_TIMEOUT} s"
        fi
        sleep 0.2
    done
    echo "127.0.0.1:$port" >"$RUN/bootstrap"
    log "started pid $pid in $((SECONDS - start)) s, run dir $RUN"
    cat "$RUN/bootstrap"
}

fail_start() {
    {
        echo "---- tail of $RUN/logs/server.log"
        tail -n 40 "$RUN/logs/server.log" 2>/dev/null || echo "(no server.log)"
        echo "---- tail of $RUN/logs/stdout.log"
        tail -n 20 "$RUN/logs/stdout.log" 2>/dev/null || true
    } >&2
    rm -f "$RUN/pid"
    die "$1"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$RUN/pid"
        log "not running ($RUN)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "pid $pid still alive after ${STOP_TIMEOUT} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$RUN/pid"
    log "stopped pid $pid"
}

status() {
    local pid
    if pid="$(running_pid)"; then
        log "running: pid $pid, bootstrap $(cat "$RUN/bootstrap" 2>/dev/null || echo '?'), run dir $RUN"
        return 0
    fi
    log "not running ($RUN)"
    return 1
}

env_cmd() {
    running_pid >/dev/null && [[ -s "$RUN/bootstrap" ]] ||
        die "no broker running in $RUN; run: scripts/kafka-broker.sh start"
    printf 'export INFERWATCH_BOOTSTRAP=%s\n' "$(<"$RUN/bootstrap")"
}

[[ $# -eq 1 ]] || usage
case "$1" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) env_cmd ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
