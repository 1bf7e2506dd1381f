package release

import (
	"fmt"
	"regexp"
)

var itemNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,128}$`)

// ValidItemName checks an item name: [a-zA-Z0-9._-]{1,128}, so it never
// contains a slash and one item's keys never cover another's.
func ValidItemName(name string) error {
	if !itemNameRE.MatchString(name) {
		return fmt.Errorf("%w: item %q must match [a-zA-Z0-9._-]{1,128} (letters, digits, dots, underscores and dashes, at most 128)", ErrInvalidItem, name)
	}
	return nil
}
