package director

import (
	"errors"
	"testing"

	"github.com/fedplane/fedplane/api"
)

func TestGate(t *testing.T) {
	g := NewGate("downloads", 3, 2)
	enter := func(caller string, wantOK bool) func() {
		t.Helper()
		release, err := g.Enter(caller)
		if wantOK && err != nil {
			t.Fatalf("Enter(%s): %v", caller, err)
		}
		if !wantOK && !errors.Is(err, api.ErrBusy) {
			t.Fatalf("Enter(%s): got %v, want ErrBusy", caller, err)
		}
		return release
	}
	a1 := enter("a", true)
	enter("a", true)
	enter("a", false) // a's own bound
	b1 := enter("b", true)
	enter("c", false) // the overall bound
	b1()
	b1() // a second release changes nothing
	enter("c", true)
	enter("b", false) // full again
	a1()
	enter("b", true)
	if g.n != 3 || len(g.by) != 3 {
		t.Fatalf("got %d in progress by %v, want 3 by a, b, c", g.n, g.by)
	}
}
