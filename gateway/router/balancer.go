package router

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// health is the passive health of one node address, shared by every
// upstream that holds the address and kept across route table rebuilds:
// maxFails failures in a row mark the node down for failTimeout (nginx's
// max_fails and fail_timeout).
type health struct {
	mu        sync.Mutex
	fails     int
	downUntil time.Time
}

func (h *health) up(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !now.Before(h.downUntil)
}

func (h *health) failed(now time.Time, maxFails int, failTimeout time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fails++
	if h.fails >= maxFails {
		h.fails = 0
		h.downUntil = now.Add(failTimeout)
	}
}

func (h *health) ok() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fails = 0
	h.downUntil = time.Time{}
}

// node is one address of an upstream with its weight.
type node struct {
	addr    string
	weight  int
	current int // smooth weighted round-robin state
	health  *health
}

// balancer picks an upstream's nodes by smooth weighted round-robin
// (nginx's): every pick adds each candidate's weight to its current
// weight, takes the candidate with the highest, and subtracts the total
// from it. Weights 5, 1, 1 give a a b a c a a, not a a a a a b c. Down
// nodes are skipped while any candidate is up. Its methods are safe for
// concurrent use.
type balancer struct {
	mu    sync.Mutex
	nodes []*node
}

// newBalancer returns a balancer of the nodes of weight above zero, in
// address order, carrying over the round-robin state of prev's nodes of
// the same address so that a rebuild does not restart the rotation.
func newBalancer(weights map[string]int, healthOf func(addr string) *health, prev *balancer) *balancer {
	b := &balancer{}
	var carried map[string]int
	if prev != nil {
		prev.mu.Lock()
		carried = make(map[string]int, len(prev.nodes))
		for _, n := range prev.nodes {
			carried[n.addr] = n.current
		}
		prev.mu.Unlock()
	}
	for addr, w := range weights {
		if w > 0 {
			b.nodes = append(b.nodes, &node{addr: addr, weight: w, current: carried[addr], health: healthOf(addr)})
		}
	}
	slices.SortFunc(b.nodes, func(x, y *node) int { return strings.Compare(x.addr, y.addr) })
	return b
}

// pick returns the next node not in tried, preferring nodes that are up;
// nil when every node was tried.
func (b *balancer) pick(tried []string, now time.Time) *node {
	b.mu.Lock()
	defer b.mu.Unlock()
	var best *node
	total := 0
	for pass := 0; pass < 2 && best == nil; pass++ {
		for _, n := range b.nodes {
			if slices.Contains(tried, n.addr) || (pass == 0 && !n.health.up(now)) {
				continue
			}
			n.current += n.weight
			total += n.weight
			if best == nil || n.current > best.current {
				best = n
			}
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// snapshot lists the nodes for status.
func (b *balancer) snapshot(now time.Time) []NodeStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]NodeStatus, len(b.nodes))
	for i, n := range b.nodes {
		out[i] = NodeStatus{Address: n.addr, Weight: n.weight, Up: n.health.up(now)}
	}
	return out
}
