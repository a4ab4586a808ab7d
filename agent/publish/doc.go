// Package publish is Vigil's face on MQTT: it publishes the scores, alerts
// and advice kept in the buffer, keeps a retained status with a Last Will,
// sends a health heartbeat, answers remote commands, and can host an
// embedded broker for the local bus.
//
// # Publishing from the buffer
//
// A [Publisher] is a consumer of the buffer's score, alert and advice lanes.
// The buffer, not the MQTT client, is the source of truth: a record is
// acknowledged in the buffer only once the broker has it (PUBACK for QoS 1,
// written to the connection for QoS 0), and whatever was in flight when a
// connection ended is read again from the buffer on the next one. Each
// connection is a fresh paho client with a clean session, a memory store and
// auto-reconnect off, so paho never resends anything on its own; the
// publisher reconnects with a jittered backoff.
//
// On every connection the publisher notes each lane's last sequence number
// (the split). Records above it are live: they go out at once, alerts and
// advice before scores. Records at or below it that the publisher has not
// acknowledged are the backlog (what was appended during the outage, and
// what was in flight when it began): it drains behind the live records, in
// order per lane, paced by Options.ReplayRate, each message marked
// "replayed": true with its original timestamp. A record replayed after a
// crash carries the same id, so subscribers can deduplicate.
//
// Delivery is at least once. A record is sent again when its
// acknowledgement was lost with the connection, or when the process
// restarts after acknowledging it out of order (above the consumer's ack
// floor); a copy carries the same id and seq. A record that is not a JSON
// object cannot be published: it is acknowledged, counted
// (LaneStats.Invalid) and logged, so it cannot block its lane.
//
// # Control plane
//
// Every connection publishes the retained status "online" first, with a
// birth number that increases on every connection and survives restarts
// (Options.StateDir); its Last Will is the retained "offline" with the same
// number, and a clean shutdown publishes "offline" itself before
// disconnecting. While connected, the "online" status is published again
// when the broker does not acknowledge it, every Options.StatusInterval, and
// after a command subscription that had failed (a clustered broker may lose
// a retained message it acknowledged). Each connection re-subscribes to
// cmd/+, and again with the backoff while the broker refuses the
// subscription (SUBACK 0x80) or does not answer (Stats.CommandsSubscribed,
// CommandSubscribeFailures); commands run one at
// a time off paho's goroutines and are answered on cmd/<name>/reply. A
// retained command message, which the broker would replay at every connect,
// is answered with an error and never run. The log line and the reply of
// every command carry its id and, when the payload has one, its requester.
//
// # Topics
//
// Under <prefix>/<device>/:
//
//	scores/<stream>     QoS Options.ScoreQoS (0)  the stored Score with "seq" and "replayed"
//	alerts/<stream>     QoS Options.AlertQoS (1)  the stored Alert with "seq" and "replayed"
//	shadow/<stream>     QoS Options.ScoreQoS (0)  with Options.Shadow: a record.Shadow (a model in its shadow run)
//	advice/<alert_id>   QoS Options.AdviceQoS (1) the stored Advice with "seq" and "replayed"
//	status              QoS 1, retained           [Status]: "online" on every connection and every StatusInterval, "offline" as Last Will and on clean shutdown
//	health              QoS 0                     the agent's snapshot plus the publisher's [Stats] under "mqtt"
//	cmd/<name>          in, QoS 1                 a command (see [DecodeCommand])
//	cmd/<name>/reply    QoS 1                     its [Reply]
package publish
