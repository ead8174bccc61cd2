#!/usr/bin/env bash
# A private Apache Kafka broker for the test suite: one node in KRaft mode, broker and controller in one JVM.
#
#   scripts/kafka-test-server.sh         fetch Kafka's jars from Maven Central if they are not cached, start the
#                                        broker if it is not running, and print its bootstrap address as the
#                                        last line
#   scripts/kafka-test-server.sh stop    stop the broker (its files stay, so the next start is quick)
#
# Settings: KAFKATEST_DIR (default /tmp/energy-platform-kafka: jars in libs/, topics in data/, configuration,
# log and pid file beside them), KAFKATEST_PORT (default 59092; the controller takes the port after it),
# KAFKATEST_HEAP (default 512m). The broker listens on 127.0.0.1 only, without authentication, creates no topic
# by itself (tests create theirs) and keeps one replica of everything: it is for throwaway test data, never for
# anything worth keeping. It needs Java 17 or newer and Maven, to fetch the jars once.
# Progress goes to stderr; stdout carries only the address, e.g. for
#   export TEST_KAFKA_BOOTSTRAP="$(scripts/kafka-test-server.sh | tail -n 1)"
set -euo pipefail

KAFKATEST_DIR=${KAFKATEST_DIR:-/tmp/energy-platform-kafka}
KAFKATEST_PORT=${KAFKATEST_PORT:-59092}
KAFKATEST_HEAP=${KAFKATEST_HEAP:-512m}
KAFKA_VERSION=4.4.0
# Kafka's jars bring slf4j 1.7's API and log4j 2 but nothing that joins them: without this binding slf4j
# logs nothing at all, not even the line that says the broker has started.
LOG4J_VERSION=2.25.5
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
LIBS_DIR="$KAFKATEST_DIR/libs"
DATA_DIR="$KAFKATEST_DIR/data"
CONFIG="$KAFKATEST_DIR/server.properties"
LOG_CONFIG="$KAFKATEST_DIR/log4j2.properties"
LOG_FILE="$KAFKATEST_DIR/server.log"
PID_FILE="$KAFKATEST_DIR/server.pid"
CONTROLLER_PORT=$((KAFKATEST_PORT + 1))
ADDRESS="127.0.0.1:$KAFKATEST_PORT"
# Written beside the jars once they are all there, and beside the data once it is formatted for this version.
STAMP="kafka_2.13 $KAFKA_VERSION, log4j-slf4j-impl $LOG4J_VERSION"

say() { echo "kafka-test-server: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

if ! [[ "$KAFKATEST_PORT" =~ ^[0-9]+$ ]] || ((KAFKATEST_PORT < 1 || KAFKATEST_PORT > 65534)); then
    die "KAFKATEST_PORT must be a port number below 65535, got '$KAFKATEST_PORT'"
fi
[[ "$KAFKATEST_DIR" = /* && "$KAFKATEST_DIR" != *[\'\"\\\ ]* ]] ||
    die "KAFKATEST_DIR must be an absolute path without quotes, backslashes or spaces"
[[ "$KAFKATEST_HEAP" =~ ^[0-9]+[kKmMgG]?$ ]] ||
    die "KAFKATEST_HEAP must be a JVM size such as 512m, got '$KAFKATEST_HEAP'"

# The pid in the pid file, if that process is alive and is this directory's broker (not a reused pid).
server_pid() {
    local pid
    pid=$(head -n 1 "$PID_FILE" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        [[ "$(ps -ww -o args= -p "$pid" 2>/dev/null)" == *"kafka.Kafka $CONFIG"* ]]; then
        echo "$pid"
    fi
}

port_open() {
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

stop_server() {
    local pid tries=0
    pid=$(server_pid)
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        say "no server is running in $KAFKATEST_DIR"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((tries++ < 40)); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "the server (pid $pid) did not stop within 20s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
    say "stopped the server (pid $pid) in $KAFKATEST_DIR"
}

install_tools() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    say "installing Java and Maven from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends default-jre-headless maven >&2; then
        say "install failed; refreshing the package lists and trying again"
        "${sudo[@]}" apt-get update -q >&2
        "${sudo[@]}" apt-get install -y -q --no-install-recommends default-jre-headless maven >&2
    fi
}

check_java() {
    local version
    version=$(java -version 2>&1 | awk -F '"' '/version/ { print $2; exit }')
    if ! [[ "${version%%.*}" =~ ^[0-9]+$ ]] || ((${version%%.*} < 17)); then
        die "Kafka $KAFKA_VERSION needs Java 17 or newer; 'java' is version '${version:-unknown}'"
    fi
}

# Kafka's jars and their dependencies from Maven Central, once: a throwaway pom names them and Maven copies
# the lot into libs/ (Maven's own cache, ~/.m2, keeps them for other directories too).
fetch_jars() {
    if [[ "$(cat "$LIBS_DIR/.complete" 2>/dev/null)" == "$STAMP" ]]; then
        return
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka's jars"
    say "fetching Kafka $KAFKA_VERSION's jars from Maven Central"
    local build="$KAFKATEST_DIR/maven"
    rm -rf "$build" "$LIBS_DIR.new"
    mkdir -p "$build"
    cat >"$build/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka-test-server.sh to fetch a Kafka broker's jars; builds nothing. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.energy-platform</groupId>
  <artifactId>kafka-test-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    # Maven's output goes to a file: even quiet, Maven 3.8 prints stray colour codes.
    if ! (cd "$build" && mvn -B "$DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime \
        -DoutputDirectory="$LIBS_DIR.new" >"$build/maven.log" 2>&1); then
        sed 's/\x1b\[[0-9;]*m//g' "$build/maven.log" | grep -E 'ERROR|FAIL' | head -n 20 >&2 || true
        die "Maven could not fetch Kafka's jars; see $build/maven.log"
    fi
    [[ -n "$(compgen -G "$LIBS_DIR.new/kafka_2.13-$KAFKA_VERSION.jar")" ]] ||
        die "Maven ran but $LIBS_DIR.new has no kafka_2.13-$KAFKA_VERSION.jar"
    echo "$STAMP" >"$LIBS_DIR.new/.complete"
    rm -rf "$LIBS_DIR" "$build"
    mv "$LIBS_DIR.new" "$LIBS_DIR"
}

write_config() {
    # Rewritten on every start, so a changed port takes effect; the data stays.
    cat >"$CONFIG" <<EOF
# Written by scripts/kafka-test-server.sh for a private single-node test broker; rewritten on each start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKATEST_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKATEST_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# One replica and one partition for the internal topics: quick to create on first use.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
EOF
    # Everything at INFO to the log file, which the start reads for the broker's "started" line.
    cat >"$LOG_CONFIG" <<EOF
# Written by scripts/kafka-test-server.sh.
status = warn
# Kafka logs until its own shutdown hook ends; log4j's hook would stop the logging before that.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
EOF
}

# The data directory is formatted once (KRaft needs a cluster id in it before the first start); data from
# another Kafka version, or a half-made directory, is test data only, so it starts over.
format_storage() {
    if [[ -f "$DATA_DIR/meta.properties" && "$(cat "$DATA_DIR/.formatted-by" 2>/dev/null)" == "$STAMP" ]]; then
        return
    fi
    local cluster_id
    rm -rf "$DATA_DIR"
    # A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    if ! java -Xmx256m -Dlog4j2.configurationFile="$LOG_CONFIG" -cp "$LIBS_DIR/*" kafka.tools.StorageTool \
        format -t "$cluster_id" -c "$CONFIG" >"$KAFKATEST_DIR/format.log" 2>&1; then
        tail -n 20 "$KAFKATEST_DIR/format.log" >&2 || true
        die "formatting $DATA_DIR failed; see $KAFKATEST_DIR/format.log"
    fi
    echo "$STAMP" >"$DATA_DIR/.formatted-by"
    say "formatted $DATA_DIR for cluster $cluster_id"
}

# Ready once the broker has logged its start and its port takes connections; a server that dies, or takes
# longer than 60s, is an error shown with the end of its log.
wait_until_ready() {
    local pid=$1 deadline=$((SECONDS + 60))
    while ! grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null || ! port_open "$KAFKATEST_PORT"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "the server exited while starting; see $LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOG_FILE" >&2 || true
            die "the server (pid $pid) was not ready within 60s; see $LOG_FILE (stop it with '$0 stop')"
        fi
        sleep 0.2
    done
}

start_server() {
    # A log per run, so the wait reads only this run's lines; the one before is kept beside it.
    if [[ -f "$LOG_FILE" ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
    # Detached from this shell's session and output: callers that read stdout (as $(...) does) wait for
    # every process holding it, and the lock on fd 9 must not outlive this script.
    # C1 only (TieredStopAtLevel=1): starts in about 2.5s instead of 4 on two cores, fast enough for tests.
    nohup setsid java -Xms"$KAFKATEST_HEAP" -Xmx"$KAFKATEST_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG_CONFIG" -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG" \
        </dev/null >"$LOG_FILE" 2>&1 9>&- &
    # nohup and setsid each replace themselves with the next program, so this is the JVM's pid.
    started_pid=$!
    echo "$started_pid" >"$PID_FILE"
    say "started the server (pid $started_pid), logging to $LOG_FILE"
}

if [[ "${1:-start}" == "stop" ]]; then
    if [[ -d "$KAFKATEST_DIR" ]]; then
        exec 9>"$KAFKATEST_DIR/.lock"
        flock 9
    fi
    stop_server
    exit 0
elif [[ "${1:-start}" != "start" ]]; then
    die "unknown command '$1'; use start (the default) or stop"
fi

began=$(now)
mkdir -p "$KAFKATEST_DIR"
# One start at a time per directory (parallel test workers may all call this).
exec 9>"$KAFKATEST_DIR/.lock"
flock 9

pid=$(server_pid)
if [[ -n "$pid" ]]; then
    grep -q "^listeners=PLAINTEXT://$ADDRESS," "$CONFIG" ||
        die "the server running in $KAFKATEST_DIR (pid $pid) listens on another port; stop it first"
    wait_until_ready "$pid"
    say "a server is already running on $ADDRESS (pid $pid)"
    echo "$ADDRESS"
    exit 0
fi

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    install_tools
fi
check_java
fetch_jars
fetched=$(now)
for port in "$KAFKATEST_PORT" "$CONTROLLER_PORT"; do
    ! port_open "$port" || die "port $port on 127.0.0.1 is taken by another program; set KAFKATEST_PORT"
done

write_config
format_storage
formatted=$(now)
start_server
wait_until_ready "$started_pid"
[[ "$(server_pid)" == "$started_pid" ]] || die "pid $started_pid in $PID_FILE is not the broker; see $LOG_FILE"
ready=$(now)
say "ready on $ADDRESS in $(elapsed "$began" "$ready")s (jars $(elapsed "$began" "$fetched")s," \
    "format $(elapsed "$fetched" "$formatted")s, start $(elapsed "$formatted" "$ready")s)"
echo "$ADDRESS"
