// Package cache is a cache node: it holds one watch per shard, keeps every
// tenant's current state and each shard's recent history in memory, and
// serves subscriptions, reads and status to gateways over gRPC.
//
// A Cache follows the meta store: every registered shard gets a Source (an
// etcd watch: Range at R, then Watch from R+1, relisting on compaction) that
// feeds the shard's state and its history ring. Subscribers get a Reset
// of their tenant's state under their prefixes, then Events made of whole
// etcd transactions, then Progress bookmarks while idle; every message ends
// with an opaque token that resumes the stream on any cache node of the
// cluster.
//
// A node is ready per shard: a shard it cannot sync (unreachable, or not
// synced within Config.SyncWait) makes only that shard's tenants
// unavailable on the node, and Readiness, Unavailable and Status say which
// shard and why:
//
//	c, err := cache.New(store, clients, cache.Config{Logger: lg})
//	defer c.Close()
//	c.Register(grpcServer)
package cache
