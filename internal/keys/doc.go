// Package keys is the physical key layout of tenant data on a shard and the
// rules for the names and keys callers send.
//
// Every tenant owns one prefix on its shard:
//
//	/confetti/t/<tenant>/kv/<key>                      plain keys
//	/confetti/t/<tenant>/cfg/<item>/v/<%020d version>  immutable versions
//	/confetti/t/<tenant>/cfg/<item>/release            release record
//	/confetti/t/<tenant>/cfg/<item>/schema             JSON Schema of the item, if set
//	/confetti/t/<tenant>/cfg/<item>/log/<%020d n>      release log
//	/confetti/t/<tenant>/svc/<service>/<instance>      service instances
//	/confetti/t/<tenant>/fence                         set while moving away
//	/confetti/t/<tenant>/lease/<lease id>              binds a lease to the tenant
//
// Outside every tenant, /confetti/plans/<tenant>/<item> indexes the items
// of the shard whose staged rollout is running (see PlansRoot).
//
// Callers never see the physical prefix: the shard proxy builds physical
// keys and ranges with this package, which keeps every range inside one
// tenant, and the cache uses Split to find the tenant of every watched key.
package keys
