#!/usr/bin/env bash
# cross/demo.sh CONFIG — run the demo (`make run`): bin/vigil on CONFIG with
# its alerts on stdout. The demo embeds an MQTT broker on 127.0.0.1:1883 and
# serves HTTP on 127.0.0.1:8787; when a port is taken (a mosquitto service,
# another vigil), the demo moves to a free port instead of failing, and says
# so. The broker already on 1883 is left alone: it may want credentials, and
# the demo's topics would mix with a real device's.
set -euo pipefail
config=${1:?usage: cross/demo.sh CONFIG}
vigil=${VIGIL:-bin/vigil}

taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		taken "$p" || { echo "$p"; return; }
	done
	echo "demo: no free port found" >&2
	exit 1
}
who() { # what listens on 127.0.0.1:PORT, when ss can tell
	command -v ss >/dev/null || return 0
	ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*"' | head -n1 | sed 's/users:(("/ (/; s/"$/)/' || true
}

broker=1883 http=8787
if taken "$broker"; then
	broker=$(free_port)
	echo "== 127.0.0.1:1883 is taken$(who 1883): the demo's embedded broker listens on 127.0.0.1:$broker"
	echo "   (the broker on 1883 is left alone). Watch: mosquitto_sub -p $broker -t 'vigil/#' -v"
	export VIGIL_MQTT_EMBEDDED_BROKER_LISTEN=127.0.0.1:$broker
else
	echo "== the demo's embedded broker listens on 127.0.0.1:1883. Watch: mosquitto_sub -t 'vigil/#' -v"
fi
if taken "$http"; then
	http=$(free_port)
	echo "== 127.0.0.1:8787 is taken$(who 8787): the demo serves HTTP on 127.0.0.1:$http"
	export VIGIL_HTTP_LISTEN=127.0.0.1:$http
fi
echo "== status page: http://127.0.0.1:$http/   metrics: http://127.0.0.1:$http/metrics"
echo "== $vigil run --config $config --print-alerts (Ctrl-C to stop)"
exec "$vigil" run --config "$config" --print-alerts
