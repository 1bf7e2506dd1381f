// Package e2e tests Confetti end to end in one process: real embedded etcd
// clusters (meta and shards), a shard proxy and cache nodes on real gRPC
// listeners, driven only through the public API, the way a user and a
// gateway would.
package e2e
