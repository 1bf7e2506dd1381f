package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// kvState is one key's value in the linearizability model.
type kvState struct {
	found bool
	val   string
}

// kvModel is a register per tenant key: get, put, delete and
// compare-and-swap, partitioned by key (each key's history is
// linearizable on its own iff the whole is).
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, o := range history {
			op := o.Input.(Op)
			k := op.Tenant + "/" + op.Key
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		var out [][]porcupine.Operation
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, _ any) (bool, any) {
		s, op := state.(kvState), input.(Op)
		switch op.Kind {
		case "get":
			return s.found == op.Found && s.val == op.Got, s
		case "put":
			return true, kvState{true, op.Value}
		case "delete":
			return true, kvState{}
		case "cas":
			holds := !s.found
			if op.Expect != "" {
				holds = s.found && s.val == op.Expect
			}
			if op.OK && holds != op.Swapped {
				return false, s
			}
			if holds {
				return true, kvState{true, op.Value}
			}
			return true, s
		}
		return false, s
	},
	DescribeOperation: func(input, _ any) string {
		op := input.(Op)
		switch {
		case op.Kind == "get" && op.Found:
			return fmt.Sprintf("get(%s) -> %s", op.Key, op.Got)
		case op.Kind == "get":
			return fmt.Sprintf("get(%s) -> absent", op.Key)
		case op.Unknown:
			return fmt.Sprintf("%s(%s, %s) -> unknown: %s", op.Kind, op.Key, op.Value, op.Err)
		case op.Kind == "cas":
			return fmt.Sprintf("cas(%s, %q -> %s) -> %v", op.Key, op.Expect, op.Value, op.Swapped)
		}
		return fmt.Sprintf("%s(%s, %s)", op.Kind, op.Key, op.Value)
	},
	DescribeState: func(state any) string {
		if s := state.(kvState); s.found {
			return s.val
		}
		return "absent"
	},
}

// linearizable checks the history of the linearizability keys with
// porcupine; an unknown write is open until after the last operation. It
// writes porcupine's visualisation to html.
func linearizable(history []Op, html string, timeout time.Duration, annotations []porcupine.Annotation) (porcupine.CheckResult, error) {
	var end int64
	for _, op := range history {
		end = max(end, op.Return)
	}
	var ops []porcupine.Operation
	for _, op := range history {
		if !strings.HasPrefix(op.Key, "lin/") || !op.OK && !op.Unknown {
			continue // TTL keys expire; failed reads and refused writes did nothing
		}
		ret := op.Return
		if op.Unknown {
			ret = end + 1
		}
		ops = append(ops, porcupine.Operation{ClientId: op.Client, Input: op, Output: op, Call: op.Call, Return: ret})
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	info.AddAnnotations(annotations)
	if err := porcupine.VisualizePath(kvModel, info, html); err != nil {
		return res, err
	}
	return res, nil
}

// writeCheck compares the writes of the history with what etcd holds in
// the reference watchers' histories: every acknowledged write must be
// there, and no write the proxy refused.
type writeCheck struct {
	Acked, Lost, Unknown, Refused, RefusedApplied int
	Examples                                      []string
}

func checkWrites(history []Op, refs map[string]*watchcheck.Reference) writeCheck {
	applied := map[string]bool{} // tenant/key=value as etcd applied it
	for _, ref := range refs {
		for _, ev := range ref.Events() {
			if ev.Type != mvccpb.PUT {
				continue
			}
			tenant, rel, ok := keys.Split(string(ev.Kv.Key))
			if !ok {
				continue
			}
			applied[tenant+"/"+rel+"="+string(ev.Kv.Value)] = true
		}
	}
	var wc writeCheck
	for _, op := range history {
		if op.Kind != "put" && op.Kind != "ttl" && !(op.Kind == "cas" && (op.Swapped || !op.OK)) {
			continue
		}
		id := op.Tenant + "/kv/" + op.Key + "=" + op.Value
		switch {
		case op.OK:
			wc.Acked++
			if !applied[id] {
				wc.Lost++
				wc.Examples = append(wc.Examples, fmt.Sprintf("lost: %s %s/%s=%s acknowledged by %s at %v", op.Kind, op.Tenant, op.Key, op.Value, op.Proxy, time.Duration(op.Return)))
			}
		case op.Unknown:
			wc.Unknown++
		default:
			wc.Refused++
			if applied[id] {
				wc.RefusedApplied++
				wc.Examples = append(wc.Examples, fmt.Sprintf("applied though refused: %s %s/%s=%s (%s)", op.Kind, op.Tenant, op.Key, op.Value, op.Err))
			}
		}
	}
	return wc
}

// Window is a span of the run between two fault events, and the requests
// started in it, split by whether their tenant's shard was faulted then.
type Window struct {
	From, To time.Duration
	// Faults are the faults active in the window.
	Faults []string
	// Faulted and Unfaulted count requests (OK of All) of tenants on a
	// shard an active fault touches, and of the others.
	FaultedOK, FaultedAll     int
	UnfaultedOK, UnfaultedAll int
}

func ratio(ok, all int) string {
	if all == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%% (%d/%d)", 100*float64(ok)/float64(all), ok, all)
}

// availability splits the run at every fault event.
func availability(history []Op, timeline []Event, end time.Duration) []Window {
	cuts := []time.Duration{0}
	for _, ev := range timeline {
		if ev.Kind == "inject" || ev.Kind == "healed" {
			cuts = append(cuts, ev.At)
		}
	}
	cuts = append(cuts, end)
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var ws []Window
	for i := 0; i+1 < len(cuts); i++ {
		w := Window{From: cuts[i], To: cuts[i+1]}
		faulted := map[string]bool{}
		for _, f := range activeFaults(timeline, w.From) {
			w.Faults = append(w.Faults, f.Fault)
			for _, s := range f.Shards {
				faulted[s] = true
			}
		}
		for _, op := range history {
			at := time.Duration(op.Call)
			if at < w.From || at >= w.To || op.Ended {
				continue
			}
			if faulted[op.Shard] {
				w.FaultedAll++
				if op.OK {
					w.FaultedOK++
				}
			} else {
				w.UnfaultedAll++
				if op.OK {
					w.UnfaultedOK++
				}
			}
		}
		ws = append(ws, w)
	}
	return ws
}

// TenantAvailability is one tenant's requests that succeeded (OK of All):
// while a fault touched its shard, while only other faults were active,
// and with no fault active.
type TenantAvailability struct {
	Tenant, Shard               string
	FaultedOK, FaultedAll       int
	OtherFaultOK, OtherFaultAll int
	CalmOK, CalmAll             int
}

// tenantAvailability splits every tenant's requests by the faults active
// when each was sent.
func tenantAvailability(history []Op, timeline []Event, tenants []Tenant) []TenantAvailability {
	out := make([]TenantAvailability, len(tenants))
	idx := map[string]int{}
	for i, tn := range tenants {
		out[i] = TenantAvailability{Tenant: tn.Name, Shard: tn.Shard}
		idx[tn.Name] = i
	}
	for _, op := range history {
		i, ok := idx[op.Tenant]
		if !ok || op.Ended {
			continue
		}
		a := &out[i]
		active := activeFaults(timeline, time.Duration(op.Call))
		hit := false
		for _, f := range active {
			hit = hit || slices.Contains(f.Shards, op.Shard)
		}
		ok = op.OK
		switch {
		case hit:
			a.FaultedAll++
			if ok {
				a.FaultedOK++
			}
		case len(active) > 0:
			a.OtherFaultAll++
			if ok {
				a.OtherFaultOK++
			}
		default:
			a.CalmAll++
			if ok {
				a.CalmOK++
			}
		}
	}
	return out
}

// activeFaults are the faults injected at or before at and not yet healed.
func activeFaults(timeline []Event, at time.Duration) []Event {
	active := map[int]Event{}
	for _, ev := range timeline {
		if ev.At > at {
			break
		}
		switch ev.Kind {
		case "inject":
			active[ev.Step] = ev
		case "healed":
			delete(active, ev.Step)
		}
	}
	var out []Event
	for _, ev := range active {
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b Event) int { return cmp.Compare(a.Step, b.Step) })
	return out
}

// writeAgain is how long after at the first write of each tenant on shard
// completed, the longest over the tenants; false if one never wrote again.
func writeAgain(history []Op, shard string, at time.Duration, tenants []Tenant) (time.Duration, bool) {
	var worst time.Duration
	for _, tn := range tenants {
		if tn.Shard != shard {
			continue
		}
		first := time.Duration(-1)
		for _, op := range history {
			if op.Tenant == tn.Name && op.OK && op.Kind != "get" && time.Duration(op.Return) >= at {
				if d := time.Duration(op.Return) - at; first < 0 || d < first {
					first = d
				}
			}
		}
		if first < 0 {
			return 0, false
		}
		worst = max(worst, first)
	}
	return worst, true
}
