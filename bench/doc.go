// Package bench holds Confetti's benchmarks: put-to-delivery latency,
// CPU and memory of fan-out to many subscribers, and write latency through
// the shard proxy, each measured against etcd itself in the same run.
package bench
