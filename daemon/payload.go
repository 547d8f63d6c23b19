package daemon

import (
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// The MQTT payloads and snapshot marks a sample produces, as pure
// functions of its results.

func displayOf(label string) string {
	if label == Uncertain {
		return "Not sure"
	}
	return model.DisplayLabel(label)
}

// classification is a camera's state message for one sample: the answer
// of region best, its top classes, and every tile's answer when the frame
// was tiled. Disease (an alert is active) is the caller's to set.
func classification(camera string, dec *Decider, inf inference, best int, at time.Time) (mqtt.Classification, []vision.TileMark) {
	top := inf.preds[best].Best()
	label := dec.Label(top)
	cls := mqtt.Classification{Camera: camera, Label: label, Display: displayOf(label), Confidence: top.Prob,
		Model: inf.m.Meta.Version, FrameTime: at.UTC()}
	for _, s := range inf.preds[best].Top {
		cls.Top = append(cls.Top, mqtt.Scored{Label: s.Label, Prob: s.Prob})
	}
	var marks []vision.TileMark
	if len(inf.boxes) > 1 || (len(inf.kinds) == 1 && inf.kinds[0] == vision.KindLeaf) {
		leaves := false
		for i, b := range inf.boxes {
			pb := inf.preds[i].Best()
			l := dec.Label(pb)
			box := [4]int{b.Min.X, b.Min.Y, b.Dx(), b.Dy()}
			kind := vision.KindTile
			if i < len(inf.kinds) {
				kind = inf.kinds[i]
			}
			leaves = leaves || kind == vision.KindLeaf
			cls.Regions = append(cls.Regions, mqtt.RegionResult{Box: box, Kind: kind, Label: l, Confidence: pb.Prob})
			cls.Tiles = append(cls.Tiles, mqtt.TileResult{Box: box, Label: l, Confidence: pb.Prob})
			marks = append(marks, vision.TileMark{Box: b, Label: l, Confidence: pb.Prob, Alert: IsDisease(l)})
		}
		if leaves {
			cls.Tiles = nil // the tiles key keeps meaning tiles
		}
	}
	return cls, marks
}

// alertPayload is the MQTT alert for a decided event.
func alertPayload(camera string, e Event, modelVersion, snapshot string) mqtt.Alert {
	a := mqtt.Alert{EventID: e.ID, Phase: e.Phase, Camera: camera, Label: e.Label, Display: displayOf(e.Label),
		Confidence: e.Confidence, Start: e.Start.UTC(), Model: modelVersion, Snapshot: snapshot, Reason: e.Reason}
	if e.Phase == mqtt.AlertEnd {
		a.End = e.End.UTC()
	}
	return a
}
