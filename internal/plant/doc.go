// Package plant holds deliberate bugs that the chaos suite switches on to
// prove that its checkers catch them. They exist only for that: a checker
// that has never caught a known bug proves nothing by passing.
//
// Without the chaosplant build tag (every normal build) On and Once are
// constant false, so each hook is dead code the compiler removes. A binary
// built with `go build -tags chaosplant` reads CONFETTI_PLANT once when it
// starts: a comma-separated list of the bug names below. Each bug fires
// once per process, at the FireAt-th time its hook is reached, so that the
// system has been running normally before it breaks:
//
//	if plant.Once(plant.SkipEvent) {
//		continue // the planted bug
//	}
package plant

// The planted bugs. What a hook counts is said with each.
const (
	// SkipEvent: the cache loses one event of the watch feed it got from
	// etcd before its state, history or subscribers see it. Counts the
	// events the cache keeps (visible tenant keys) as it applies live
	// transactions.
	SkipEvent = "skip-event"
	// AdvanceToken: the cache applies one transaction and moves its
	// revision past it but never delivers it (neither history nor
	// subscribers), so subscribers are told they hold a revision they never
	// received. Counts live transactions with at least one kept event.
	AdvanceToken = "advance-token"
	// DropSecondEvent: the cache loses the second event of a transaction,
	// breaking its atomicity. Counts only live transactions with at least
	// two kept events.
	DropSecondEvent = "drop-second-event"
	// AckUnapplied: the shard proxy answers one Put with success and a
	// plausible header (the shard's revision plus one) without sending it
	// to etcd. Counts Puts that passed validation and routing.
	AckUnapplied = "ack-unapplied"
)

// FireAt is the call of Once, per bug, that returns true.
const FireAt = 20
