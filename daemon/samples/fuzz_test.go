package samples

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// FuzzImportLabelStudio: no file panics the Label Studio import, and it
// gives no sample a label outside those allowed.
func FuzzImportLabelStudio(f *testing.F) {
	st := openStore(f)
	ids := addSamples(f, st, "cam", 2, t0, "Tomato___healthy")
	f.Add([]byte(`[{"data":{"sample_id":"` + ids[0] + `"},"annotations":[{"result":[{"type":"choices","value":{"choices":["Tomato___healthy"]}}],"completed_by":1}]}]`))
	f.Add([]byte(`[{"data":{"sample_id":"` + ids[1] + `"},"annotations":[{"result":[{"type":"choices","value":{"choices":["../x"]}}],"completed_by":{"email":"a@b"}}]}]`))
	f.Add([]byte(`[{"data":{}},null,{"annotations":[{"was_cancelled":true}]}]`))
	f.Add([]byte(`{"not":"a list"}`))
	allowed := []string{"Tomato___healthy", "not_a_leaf", "unsure"}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		st.ImportLabelStudio(ctx, bytes.NewReader(b), allowed, "fuzz", true)
		list, err := st.List(ctx, Filter{Labelled: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if !slices.Contains(allowed, s.Label) {
				t.Fatalf("sample %s got the label %q", s.ID, s.Label)
			}
		}
	})
}
