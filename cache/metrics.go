package cache

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	subscribers   prometheus.Gauge
	resets        *prometheus.CounterVec
	eventsIn      prometheus.Counter
	eventsOut     prometheus.Counter
	bytesOut      prometheus.Counter
	messagesOut   prometheus.Counter
	watchRestarts *prometheus.CounterVec
	relists       *prometheus.CounterVec
	revision      *prometheus.GaugeVec
	synced        *prometheus.GaugeVec
	historyEvents *prometheus.GaugeVec
	groups        prometheus.Gauge
	resetEncodes  prometheus.Counter
	lagging       prometheus.Counter
	fanoutLatency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "subscribers",
			Help: "Open subscriptions on this node.",
		}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "resets_total",
			Help: "Resets sent, by reason (new, view, history, lagging).",
		}, []string{"reason"}),
		eventsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "events_in_total",
			Help: "Events received from shard watches.",
		}),
		eventsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "events_out_total",
			Help: "Events sent, counted once for each subscription a message is for.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "sent_bytes_total",
			Help: "Bytes of subscription messages, counted once for each subscription a message is for.",
		}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "stream_messages_total",
			Help: "Messages written to subscription streams; on a SubscribeMany stream one message serves every subscription it names.",
		}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "watch_restarts_total",
			Help: "Shard watches restarted (compaction, cancellation, stall, error).",
		}, []string{"shard"}),
		relists: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "shard_relists_total",
			Help: "Listings of a synced shard, made when etcd's history no longer covered the node's revision; subscribers get the difference instead of etcd's transactions.",
		}, []string{"shard"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "shard_revision",
			Help: "Last revision applied per shard.",
		}, []string{"shard"}),
		synced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "shard_synced",
			Help: "1 once the node has loaded a shard and serves its subscribers, 0 while it loads it.",
		}, []string{"shard"}),
		historyEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "history_events",
			Help: "Events held in each shard's history ring.",
		}, []string{"shard"}),
		resetEncodes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "reset_encodes_total",
			Help: "Resets encoded; compare with resets_total to see how many the encoded-reset cache served.",
		}),
		groups: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "groups",
			Help: "Subscriber groups (same tenant, prefixes and view) sharing encoded messages.",
		}),
		lagging: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "lagging_total",
			Help: "Subscriptions whose stream's queue filled up; each caught up from history or by a Reset.",
		}),
		fanoutLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "confetti", Subsystem: "cache", Name: "fanout_latency_seconds",
			Help:    "Time from a transaction reaching the cache to its message being queued to every member of a group.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.subscribers, m.resets, m.eventsIn, m.eventsOut, m.bytesOut, m.messagesOut, m.watchRestarts, m.relists, m.revision, m.synced, m.historyEvents, m.groups, m.resetEncodes, m.lagging, m.fanoutLatency)
	}
	return m
}
