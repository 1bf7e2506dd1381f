// Package testcluster starts, for a test, the real etcd clusters a
// Confetti deployment runs on: a meta cluster and several shard clusters
// (embedded etcd), with the shards registered in meta, plus meta stores and
// shard clients for the components under test. Everything stops when the
// test ends.
package testcluster
