// Package gateway is the subscriber side of Confetti: the SDK that gateway
// fleets embed to receive a tenant's configuration and service registry
// from cache nodes, and the reference HTTP gateway built on it.
//
// It speaks only the Cache service of package confettipb (Subscribe with a
// resume token, Reset, Events, Progress) and imports neither the shard
// proxy, nor the cache, nor etcd's server, so that embedding it keeps a
// gateway's dependencies small.
package gateway
