//go:build !chaosplant

package plant

import "testing"

func TestWithoutTheTagNothingIsOn(t *testing.T) {
	for _, name := range []string{SkipEvent, AdvanceToken, DropSecondEvent, AckUnapplied} {
		for i := 0; i < 2*FireAt; i++ {
			if On(name) || Once(name) {
				t.Fatalf("%s is on in a build without the chaosplant tag", name)
			}
		}
	}
}
