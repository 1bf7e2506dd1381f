// Package watchcheck checks the subscription contract (ordered, unique,
// atomic, reliable, resumable, bookmarked) of what a subscriber received
// against a reference watcher of etcd itself.
//
// A Reference lists a shard at a revision and then watches it, so it knows
// the shard's every transaction and can rebuild any tenant's state at any
// later revision, whatever compaction does to etcd meanwhile. A Stream
// records one subscriber's messages across its reconnects. Check compares
// them:
//
//	ref, _ := watchcheck.StartReference(ctx, shardClient)
//	s := watchcheck.NewStream(start)   // the Start the subscriber sent
//	s.Subscribed(token)        // at every (re)subscribe
//	s.Received(msg)            // for every message
//	err := watchcheck.Check(ref, s, revisionOf, watchcheck.Options{})
//
// Tests of the cache, the gateway SDK and chaos runs share it.
package watchcheck
