package release

import "github.com/cespare/xxhash/v2"

// Buckets is the number of percentage buckets: rules are in basis points,
// 10000 is everyone.
const Buckets = 10000

// Bucket returns the instance's sticky bucket in [0, 10000) basis points:
// a hash of tenant/item/instanceID. A percentage rule of bp basis points
// matches when Bucket < bp, so raising a percentage keeps everyone already
// in, and every proxy and cache node computes the same bucket.
func Bucket(tenant, item, instanceID string) int32 {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(tenant)
	d.WriteString("/")
	d.WriteString(item)
	d.WriteString("/")
	d.WriteString(instanceID)
	return int32(d.Sum64() % Buckets)
}
