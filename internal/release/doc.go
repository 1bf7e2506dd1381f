// Package release is the pure logic of gray releases, shared by the shard
// proxy (which validates and stores release records) and the cache (which
// resolves them per subscriber): sticky percentage buckets, label
// selectors, item names and Resolve, which picks the version a gateway
// receives from a release record and the gateway's identity.
//
// Nothing here touches etcd or the network, every function is safe for
// concurrent use, and Resolve does not allocate for percentage and
// instance rules, so a cache can resolve a release for tens of thousands
// of subscribers on every change. Parsed selectors are cached by their
// text, so a selector is parsed once, not once per subscriber.
package release
