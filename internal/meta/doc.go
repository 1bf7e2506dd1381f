// Package meta is the meta store: the shard registry, the tenant placement
// table, the API key records and the cluster-wide secrets, kept in the meta
// etcd cluster and mirrored in memory by a watch.
//
// Both the shard proxy and the cache nodes run a Store. Reads (Tenant,
// Shard, Shards, APIKey) are answered from memory, so routing and checking
// an API key cost no etcd round trip and keep working from the last known
// state while meta is down. Writes (AddShard, CreateTenant, CreateAPIKey)
// are create-only transactions, so several
// proxies can run side by side with no state but meta and still agree:
//
//	st, err := meta.New(metaClient, meta.Config{Logger: lg})
//	if err := st.WaitReady(ctx); err != nil { ... }
//	t, created, err := st.CreateTenant(ctx, "acme")
//
// Clients holds one long-lived etcd client per shard, following the
// registry.
package meta
