package meta

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Place proposes a shard for a tenant among the active shards, given how
// many tenants each shard already holds.
//
// Shards are ranked by weighted rendezvous (highest random weight) hashing:
// score = weight / -ln(u), u uniform in (0,1) from a hash of tenant and
// shard, so each tenant has a stable preference order and adding a shard
// only takes tenants that now prefer it. The first shard in that order whose
// count is below its bounded-load cap, ceil((1+e) * (total+1) * weight /
// sum of weights), wins. The caps add up to more than the tenants, so some
// shard always fits.
//
// The library go-rendezvous returns only the top node, not the ranking
// that the bounded-load cap needs, hence this function.
func Place(tenant string, shards []Shard, counts map[string]int, loadFactor float64) (string, error) {
	if len(shards) == 0 {
		return "", fmt.Errorf("%w: register a shard with `confetti shard add ID --etcd-endpoints URL` first", ErrNoShard)
	}
	ranked := Rank(tenant, shards)
	var total int
	var sumW float64
	for _, sh := range shards {
		total += counts[sh.ID]
		sumW += sh.weight()
	}
	for _, sh := range ranked {
		cap := math.Ceil((1 + loadFactor) * float64(total+1) * sh.weight() / sumW)
		if float64(counts[sh.ID]) < cap {
			return sh.ID, nil
		}
	}
	// Unreachable while the caps add up to more than total; kept so that
	// float rounding can never leave a tenant without a shard.
	return ranked[0].ID, nil
}

// Rank orders shards by a tenant's weighted rendezvous score, best first;
// ties break by shard id so every proxy ranks alike.
func Rank(tenant string, shards []Shard) []Shard {
	type scored struct {
		sh    Shard
		score float64
	}
	s := make([]scored, len(shards))
	for i, sh := range shards {
		h := xxhash.Sum64String(tenant + "\x00" + sh.ID)
		u := (float64(h>>11) + 0.5) / (1 << 53) // uniform in (0,1)
		s[i] = scored{sh: sh, score: sh.weight() / -math.Log(u)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.sh.ID, b.sh.ID)
	})
	out := make([]Shard, len(s))
	for i := range s {
		out[i] = s[i].sh
	}
	return out
}
