// Package shardproxy is the shard proxy: the stateless front door that
// spreads tenants over several etcd clusters (shards) and serves
// tenant-scoped Tenants, Shards, KV, Leases and Releases over gRPC.
//
// A Proxy routes every request by the placement table of a meta.Store (held
// in memory and fed by a watch, so routing costs no meta round trip) to the
// tenant's shard through the long-lived etcd clients of a meta.Clients. It
// adds the tenant's physical prefix to every key, clamps every range inside
// the tenant, strips the prefix from every key it returns, and makes every
// write a transaction that also requires the tenant's fence key to be
// absent, so no write lands on a shard a tenant is moving away from. Several
// proxies can run side by side; none holds state of its own:
//
//	p, err := shardproxy.New(store, clients, shardproxy.Config{Logger: lg, Registerer: reg})
//	if err != nil { ... }
//	p.Register(grpcServer)
//
// The proxy checks every shard on an interval (health.go): new tenants are
// placed only on active shards whose last check passed, and AddShard
// registers an etcd cluster only once it has found it readable and
// writable with the proxy's etcd credentials (or as pending, with force).
//
// Leases are granted on the tenant's shard and bound to the tenant by an
// owner key attached to the lease (leases.go); the keepalives of every
// caller travel over one LeaseKeepAlive stream per shard (keepalive.go).
// Those streams are the only thing a Proxy keeps open: Close it when the
// gRPC server drains, which also ends the callers' KeepAlive streams.
//
// Releases (items.go, releases.go, plan.go, rollout.go) keep each config
// item's immutable versions, release record and release log under the
// tenant's cfg/ space, and change a release only by a transaction that
// compares the record's mod revision. A plan controller in every proxy
// advances staged rollouts, found through a per-shard index of running
// plans, from the gateways' rollout state that a RolloutReader gathers
// from the cache nodes registered in meta.
//
// The same API is served over HTTP/JSON by HTTPHandler (see http.go): a
// grpc-gateway mux that forwards each request to the proxy's own gRPC
// server, so that the server's interceptors apply to HTTP callers too.
//
// API keys are checked before a request reaches the Proxy: the roles
// install internal/auth's interceptors on the gRPC server, which verify the
// key and apply the access policy of the method. The Proxy stores and
// revokes keys (apikeys.go) and finds the caller with auth.FromContext.
package shardproxy
