// Package etcdapi serves etcd's v3 API (gRPC and the /v3 JSON gateway) in
// front of Confetti, so that unmodified etcd clients see one tenant's
// plain keys as a whole etcd cluster.
//
// It is an adapter only. Reads (Range) and watches go to the cache node's
// Cache service (Range, SubscribeMany); writes, transactions and leases go
// to the shard proxy's KV and Leases services, each with the caller's API
// key, so placement, fencing, limits and authorization stay where they
// are. An etcd key K of the caller's tenant is the plain key K of the
// native API, and every range is clamped inside the tenant by the same
// code the native API uses.
//
// The caller's tenant comes from etcd's authentication: Authenticate with
// user = tenant and password = an API key of that tenant (or an operator
// key) returns a token kept in memory, which later requests carry.
package etcdapi
