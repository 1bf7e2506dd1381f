package keys

import (
	"fmt"
	"strconv"
	"strings"
)

// The keys of one config item, under the tenant's cfg/ space:
//
//	cfg/<item>/v/<%020d version>  immutable version bodies (confettipb.ItemVersion)
//	cfg/<item>/release            release record (confettipb.Release)
//	cfg/<item>/schema             JSON Schema of the item's versions, if set
//	cfg/<item>/log/<%020d n>      release log (confettipb.ReleaseLogEntry)
//
// Item names never contain "/" (release.ValidItemName), so one item's
// prefix never covers another's. Numbers are zero-padded to 20 digits so
// that key order is numeric order.
const (
	itemVersions = "v/"
	itemRelease  = "release"
	itemSchema   = "schema"
	itemLog      = "log/"
)

// PlansRoot prefixes the shard's index of running staged rollouts:
// /confetti/plans/<tenant>/<item> exists exactly while the item's release
// record holds a running plan, and is written in the same transaction as
// the record. It lies outside every tenant's prefix so that a plan
// controller finds the running plans of a shard with one range, whatever
// the number of tenants and items.
const PlansRoot = "/confetti/plans/"

// CfgKind says which key of an item a tenant-relative cfg/ key is.
type CfgKind int

const (
	// CfgOther is any other key under cfg/.
	CfgOther CfgKind = iota
	// CfgVersion is a version body: cfg/<item>/v/<version>.
	CfgVersion
	// CfgRelease is the release record: cfg/<item>/release.
	CfgRelease
	// CfgSchema is the JSON Schema: cfg/<item>/schema.
	CfgSchema
	// CfgLog is a release log entry: cfg/<item>/log/<n>.
	CfgLog
)

// Cfg returns the prefix of a tenant's config items.
func Cfg(tenant string) string { return Tenant(tenant) + SpaceCfg }

// Item returns the prefix of every key of one item.
func Item(tenant, item string) string { return Cfg(tenant) + item + "/" }

// ItemVersions returns the prefix of an item's version bodies.
func ItemVersions(tenant, item string) string { return Item(tenant, item) + itemVersions }

// ItemVersion returns the key of one version body.
func ItemVersion(tenant, item string, version int64) string {
	return ItemVersions(tenant, item) + pad(version)
}

// ItemRelease returns the key of an item's release record.
func ItemRelease(tenant, item string) string { return Item(tenant, item) + itemRelease }

// ItemSchema returns the key of an item's JSON Schema.
func ItemSchema(tenant, item string) string { return Item(tenant, item) + itemSchema }

// ItemLogs returns the prefix of an item's release log.
func ItemLogs(tenant, item string) string { return Item(tenant, item) + itemLog }

// ItemLog returns the key of the n-th entry of an item's release log.
func ItemLog(tenant, item string, n int64) string { return ItemLogs(tenant, item) + pad(n) }

// Plan returns the shard's plan index key of an item (see PlansRoot).
func Plan(tenant, item string) string { return PlansRoot + tenant + "/" + item }

// SplitPlan returns the tenant and item of a plan index key.
func SplitPlan(physical string) (tenant, item string, ok bool) {
	rest, found := strings.CutPrefix(physical, PlansRoot)
	if !found {
		return "", "", false
	}
	tenant, item, found = strings.Cut(rest, "/")
	if !found || tenant == "" || item == "" || strings.Contains(item, "/") {
		return "", "", false
	}
	return tenant, item, true
}

func pad(n int64) string { return fmt.Sprintf("%020d", n) }

// ParseCfg takes a tenant-relative key under cfg/ apart: the item, which
// of its keys it is, and the version or log number for CfgVersion and
// CfgLog. ok is false for keys outside cfg/ or without an item.
func ParseCfg(rel string) (item string, kind CfgKind, n int64, ok bool) {
	rest, found := strings.CutPrefix(rel, SpaceCfg)
	if !found {
		return "", CfgOther, 0, false
	}
	item, sub, found := strings.Cut(rest, "/")
	if !found || item == "" {
		return "", CfgOther, 0, false
	}
	switch {
	case sub == itemRelease:
		return item, CfgRelease, 0, true
	case sub == itemSchema:
		return item, CfgSchema, 0, true
	case strings.HasPrefix(sub, itemVersions):
		if n, ok := parsePadded(sub[len(itemVersions):]); ok {
			return item, CfgVersion, n, true
		}
	case strings.HasPrefix(sub, itemLog):
		if n, ok := parsePadded(sub[len(itemLog):]); ok {
			return item, CfgLog, n, true
		}
	}
	return item, CfgOther, 0, true
}

func parsePadded(s string) (int64, bool) {
	if len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}
