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
//	c, err := gateway.New(gateway.Config{Endpoints: caches, Tenant: "acme", APIKey: key, SnapshotDir: dir,
//		Prefixes: []string{"/routes/"}, Items: []string{"gateway"}, Services: []string{"api"}})
//	c.OnChange(func(ch gateway.Change) { rebuild(ch.View) })
//	c.Start(ctx)
//	<-c.Ready()
//	kv, ok := c.Get("/routes/1")        // the key as its writer wrote it
//	cfg, ok := c.Item("gateway")         // the item's version for this gateway
//	c.View().RangeInstances("api", fn)   // the instances of service api
//
// Keys are named as their writers name them; each KeyValue's Kind says
// whether it is a plain key, a config item or a service instance.
//
// It speaks only the Cache service of package confettipb and imports
// neither the shard proxy, nor the cache, nor etcd, so that embedding it
// keeps a gateway's dependencies small.
package gateway
