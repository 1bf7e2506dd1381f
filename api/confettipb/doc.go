// Package confettipb is the generated Go code of Confetti's public API,
// defined in api/proto/confetti/v1: the Tenants, Shards, KV, Leases and
// Releases services of the shard proxy and the Cache service of cache
// nodes. Regenerate it with `make proto`; CI fails when it drifts from the
// definitions.
package confettipb
