package release

import (
	"fmt"
	"regexp"

	"github.com/confetti-io/confetti/api/confettipb"
)

var grayIDRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)

// ValidGrayID checks a gray id: [a-zA-Z0-9._-]{1,64}.
func ValidGrayID(id string) error {
	if !grayIDRE.MatchString(id) {
		return fmt.Errorf("%w: gray id %q must match [a-zA-Z0-9._-]{1,64} (letters, digits, dots, underscores and dashes, at most 64)", ErrInvalidGray, id)
	}
	return nil
}

// CheckRule checks a gray's rule: a percentage of 1..10000 basis points,
// a selector that parses, or a non-empty list of instance ids without
// empty or repeated ids.
func CheckRule(r *confettipb.Rule) error {
	switch x := r.GetRule().(type) {
	case *confettipb.Rule_BasisPoints:
		if x.BasisPoints < 1 || x.BasisPoints > Buckets {
			return fmt.Errorf("%w: percentage rule of %d basis points is outside 1..10000 (100 basis points are 1%%)", ErrInvalidGray, x.BasisPoints)
		}
	case *confettipb.Rule_Selector:
		if _, err := ParseSelector(x.Selector); err != nil {
			return err
		}
	case *confettipb.Rule_Instances:
		ids := x.Instances.GetIds()
		if len(ids) == 0 {
			return fmt.Errorf("%w: instance rule lists no instances; name at least one instance id", ErrInvalidGray)
		}
		seen := make(map[string]bool, len(ids))
		for _, id := range ids {
			if id == "" {
				return fmt.Errorf("%w: instance rule holds an empty instance id", ErrInvalidGray)
			}
			if seen[id] {
				return fmt.Errorf("%w: instance rule lists %q twice", ErrInvalidGray, id)
			}
			seen[id] = true
		}
	default:
		return fmt.Errorf("%w: a gray needs a rule: basis_points (percentage), selector (labels) or instances", ErrInvalidGray)
	}
	return nil
}

// CheckPlanSteps checks a staged plan's shape: steps ascending within
// 1..10000 and ending at 10000, a bake time that is not negative and a
// NACK limit within 0..10000 basis points.
func CheckPlanSteps(p *confettipb.Plan) error {
	steps := p.GetSteps()
	if len(steps) == 0 {
		return fmt.Errorf("%w: a plan needs steps, in basis points ending at 10000 (for example 100,1000,5000,10000)", ErrInvalidPlan)
	}
	for i, s := range steps {
		if s < 1 || s > Buckets {
			return fmt.Errorf("%w: step %d is %d basis points, outside 1..10000", ErrInvalidPlan, i+1, s)
		}
		if i > 0 && s <= steps[i-1] {
			return fmt.Errorf("%w: steps must be ascending: step %d (%d) follows %d", ErrInvalidPlan, i+1, s, steps[i-1])
		}
	}
	if last := steps[len(steps)-1]; last != Buckets {
		return fmt.Errorf("%w: the last step is %d basis points; a plan ends at 10000 (everyone)", ErrInvalidPlan, last)
	}
	if p.GetBakeSeconds() < 0 {
		return fmt.Errorf("%w: bake time %ds must not be negative", ErrInvalidPlan, p.GetBakeSeconds())
	}
	if m := p.GetMaxNackBasisPoints(); m < 0 || m > Buckets {
		return fmt.Errorf("%w: NACK limit of %d basis points is outside 0..10000", ErrInvalidPlan, m)
	}
	return nil
}
