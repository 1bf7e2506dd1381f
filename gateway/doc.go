// Package gateway is the subscriber side of Confetti: the SDK that gateway
// fleets embed to receive a tenant's configuration and service registry
// from cache nodes. The reference HTTP gateway built on it is package
// gateway/router.
//
// A Client keeps one subscription current: it applies each Reset (at its
// last chunk) and each Events message atomically to an immutable View that
// readers load without a lock, reconnects across cache endpoints with
// exponential backoff and full jitter (the first reconnect after a failure
// too, so that a fleet spreads out), resumes from its token so that a
// failover replays instead of resetting, and writes its view to a
// checksummed snapshot file (coalesced; write, fsync, rename) that a
// restart serves at once, even with every cache node down. A Validate
// hook refuses values; config item versions are ACKed or NACKed to the
// cache for rollout status.
//
//	c, err := gateway.New(gateway.Config{Endpoints: caches, Tenant: "acme", APIKey: key, SnapshotDir: dir})
//	c.OnChange(func(ch gateway.Change) { rebuild(ch.View) })
//	c.Start(ctx)
//	<-c.Ready()
//	kv, ok := c.Get("kv/routes/1")
//
// It speaks only the Cache service of package confettipb and imports
// neither the shard proxy, nor the cache, nor etcd, so that embedding it
// keeps a gateway's dependencies small.
package gateway
