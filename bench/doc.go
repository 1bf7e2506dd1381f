// Package bench is Confetti's benchmark harness (`confetti bench`): it
// runs the same workload against Confetti and against what users would
// run instead, in one invocation on one machine, and writes the figures as
// results.json, results.md and PNG plots.
//
// The scenarios, each runnable alone:
//
//   - fanout: one writer puts timestamped updates at a set rate into K
//     tenants; N subscribers receive them through each target: floor (a
//     bare gRPC server-stream fan-out with no store, the transport limit),
//     confetti (cache nodes), etcd (watchers on etcd itself), etcdapi (the
//     same clientv3 watchers on the cache nodes' etcd front door) and
//     grpcproxy (watchers through etcd's grpc-proxy). Latency is measured from each
//     update's intended send time (so a writer that falls behind does not
//     hide delay), into an HdrHistogram.
//   - scale: the fan-out at N up to 50,000, subscribers spread over child
//     processes and 127.0.0.x source addresses.
//   - resume: N subscribers on cache node 1; node 1 stops; the time until
//     every subscriber has resumed on node 2, and how many needed a Reset.
//   - writes: put and transaction latency and throughput through the shard
//     proxy against etcd itself, on 1 and 3 shards.
//
// Servers (embedded etcd, cache nodes, proxies, floor) and the writer run
// in the calling process; subscribers run in child processes, this
// executable started again with Config.ChildArgs and ChildEnv set, which
// must call RunChild. Every run checks that every subscriber got every
// update, and fails when one did not.
//
//	res, err := bench.Run(ctx, bench.Config{Quick: true, Out: dir, ChildArgs: []string{"bench", "child"}})
package bench
