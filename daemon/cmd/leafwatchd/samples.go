package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
)

const samplesUsage = `Usage: leafwatchd samples [--config FILE | --state-dir DIR] COMMAND [OPTIONS]

The samples leafwatchd kept for labelling, in the state directory (also
while the daemon runs):

  summary                              counts per label, waiting, disk used
  list [--unlabelled|--labelled] [--camera C] [--rule R] [--label L] [--limit N] [--json]
  label --as LABEL [--by NAME] ID...   label samples (LABEL: one of the model's labels, not_a_leaf, unsure)
  label --accept [--by NAME] ID...     give each sample the model's own top class
  undo [--by NAME]                     take back NAME's last labelling
  export --out DIR [--labelled-only] [--camera C] [--image-url-prefix P]
                                       the image folder finetune reads (LABEL/ID.jpg), samples.jsonl,
                                       and Label Studio tasks with the model's predictions
  import FILE.json [--by NAME] [--overwrite]
                                       labels from a Label Studio JSON export of those tasks
  delete ID... | --unsure              remove samples for good (labelled ones too: you asked)
`

func cmdSamples(args []string, out, errs io.Writer) int {
	fs := flag.NewFlagSet("samples", flag.ContinueOnError)
	fs.SetOutput(errs)
	cfgPath := fs.String("config", "/etc/leafwatch/leafwatchd.yaml", "the daemon's configuration (for state_dir and the model's labels)")
	stateDir := fs.String("state-dir", "", "the state directory, instead of the one the configuration names")
	fs.Usage = func() { fmt.Fprint(errs, samplesUsage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(errs, samplesUsage)
		return 2
	}
	env := &samplesEnv{out: out, errs: errs}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if err := env.resolve(*cfgPath, *stateDir, given["config"]); err != nil {
		fmt.Fprintln(errs, "leafwatchd samples:", err)
		return 1
	}
	ctx := context.Background()
	st, err := samples.OpenExisting(samples.Dir(env.stateDir))
	if err != nil {
		fmt.Fprintln(errs, "leafwatchd samples:", err)
		return 1
	}
	defer st.Close()
	env.st = st
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	var run func(context.Context, []string) error
	switch cmd {
	case "summary":
		run = env.summary
	case "list":
		run = env.list
	case "label":
		run = env.label
	case "undo":
		run = env.undo
	case "export":
		run = env.export
	case "import":
		run = env.imp
	case "delete":
		run = env.delete
	default:
		fmt.Fprintf(errs, "leafwatchd samples: unknown command %q\n\n%s", cmd, samplesUsage)
		return 2
	}
	if err := run(ctx, rest); err != nil {
		fmt.Fprintln(errs, "leafwatchd samples "+cmd+":", err)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	return 0
}

type samplesEnv struct {
	out, errs io.Writer
	stateDir  string
	modelPath string
	st        *samples.Store
}

// resolve finds the state directory and the model: --state-dir wins; the
// configuration is read when given, or when it exists at its default path.
func (e *samplesEnv) resolve(cfgPath, stateDir string, cfgGiven bool) error {
	e.stateDir = stateDir
	if cfgGiven || stateDir == "" {
		cfg, err := daemon.LoadConfig(cfgPath)
		switch {
		case err == nil:
			if e.stateDir == "" {
				e.stateDir = cfg.StateDir
			}
			e.modelPath = cfg.Model
		case cfgGiven || stateDir == "":
			return fmt.Errorf("%w (give --state-dir DIR to work without a configuration)", err)
		}
	}
	return nil
}

// labels are the labels a person may give: the model's (read from the
// checkpoint's header), not_a_leaf and unsure. Without a readable model
// only those two, and the error says why.
func (e *samplesEnv) labels() ([]string, error) {
	var labels []string
	var err error
	if e.modelPath == "" {
		err = errors.New("no model: give --config with the daemon's configuration")
	} else if md, merr := model.ReadMetadata(e.modelPath); merr != nil {
		err = merr
	} else {
		labels = md.Labels
	}
	return append(labels, fieldset.NotALeaf, fieldset.Unsure), err
}

// allowed checks a label a person gives: the model's, not_a_leaf, unsure,
// or with newClass any label that can name a class folder.
func (e *samplesEnv) allowed(newClass bool) (func(string) bool, error) {
	labels, err := e.labels()
	if err != nil && !newClass {
		return nil, fmt.Errorf("the model's labels: %w (or give --new-class to accept any label)", err)
	}
	return func(l string) bool {
		return slices.Contains(labels, l) || (newClass && fieldset.ValidLabel(l))
	}, nil
}

func defaultWho() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "cli"
}

func (e *samplesEnv) summary(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sum, err := e.st.Summarise(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.out).Encode(sum)
	}
	fmt.Fprintf(e.out, "%d samples: %d waiting for a label, %d labelled (%d of them baseline samples), %.1f MB\n",
		sum.Total, sum.Unlabelled, sum.Total-sum.Unlabelled, sum.Baseline, float64(sum.Bytes)/(1<<20))
	labels := make([]string, 0, len(sum.Labelled))
	for l := range sum.Labelled {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	for _, l := range labels {
		fmt.Fprintf(tw, "  %s\t%d\n", l, sum.Labelled[l])
	}
	return tw.Flush()
}

func (e *samplesEnv) list(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	var f samples.Filter
	fs.BoolVar(&f.Unlabelled, "unlabelled", false, "only samples waiting for a label (lowest margin first)")
	fs.BoolVar(&f.Labelled, "labelled", false, "only labelled samples")
	fs.StringVar(&f.Camera, "camera", "", "only this camera")
	fs.StringVar(&f.Rule, "rule", "", "only samples this rule kept (uncertain, close_call, disagree, alert, baseline)")
	fs.StringVar(&f.Label, "label", "", "only samples with this label")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many")
	asJSON := fs.Bool("json", false, "one JSON record per line (as samples.jsonl)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.Rule != "" && !slices.Contains(fieldset.Rules, f.Rule) {
		return fmt.Errorf("--rule %q: one of %s", f.Rule, strings.Join(fieldset.Rules, ", "))
	}
	f.Queue = f.Unlabelled
	list, err := e.st.List(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.out)
		for _, s := range list {
			if err := enc.Encode(s.Record); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCAMERA\tTIME\tPREDICTED\tPROB\tRULES\tLABEL")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", s.ID, s.Camera, s.Time.Local().Format("2006-01-02 15:04:05"),
			s.Predicted(), s.Top[0].Prob, strings.Join(s.Rules, ","), s.Label)
	}
	return tw.Flush()
}

func (e *samplesEnv) label(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("label", flag.ContinueOnError)
	as := fs.String("as", "", "the label to give")
	accept := fs.Bool("accept", false, "give each sample the model's own top class")
	by := fs.String("by", defaultWho(), "who labels (undo takes back this person's last action)")
	newClass := fs.Bool("new-class", false, "accept a label that is not one of the model's (a class to add when retraining)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids := fs.Args()
	if len(ids) == 0 {
		return errors.New("give the ids of the samples to label (leafwatchd samples list)")
	}
	if (*as == "") == !*accept {
		return errors.New("give --as LABEL or --accept")
	}
	ok, err := e.allowed(*newClass)
	if err != nil {
		return err
	}
	groups := map[string][]string{}
	if *accept {
		for _, id := range ids {
			s, err := e.st.Get(ctx, id)
			if err != nil {
				return err
			}
			groups[s.Predicted()] = append(groups[s.Predicted()], id)
		}
	} else {
		groups[*as] = ids
	}
	for l, g := range groups {
		if !ok(l) {
			return fmt.Errorf("%q is not one of the model's labels, not_a_leaf or unsure (--new-class adds a class)", l)
		}
		res, err := e.st.Label(ctx, g, l, *by, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(e.out, "%s: %d labelled, %d had it already", l, res.Changed, res.Same)
		if len(res.Missing) > 0 {
			fmt.Fprintf(e.out, ", %d unknown ids: %s", len(res.Missing), strings.Join(res.Missing, " "))
		}
		fmt.Fprintln(e.out)
		if len(res.Missing) > 0 {
			return fmt.Errorf("%d ids are not in the store", len(res.Missing))
		}
	}
	return nil
}

func (e *samplesEnv) undo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("undo", flag.ContinueOnError)
	by := fs.String("by", defaultWho(), "whose last action to take back")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := e.st.Undo(ctx, *by)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "undone: %d samples no longer labelled %s", u.Restored, u.Label)
	if u.Skipped > 0 {
		fmt.Fprintf(e.out, " (%d relabelled since were left as they are)", u.Skipped)
	}
	fmt.Fprintln(e.out)
	return nil
}

func (e *samplesEnv) export(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	dir := fs.String("out", "", "folder to write (replaced if it holds an earlier export)")
	var opt samples.ExportOptions
	fs.BoolVar(&opt.LabelledOnly, "labelled-only", false, "leave out the images of unlabelled and unsure samples")
	fs.StringVar(&opt.Camera, "camera", "", "only this camera's samples")
	fs.StringVar(&opt.ImageURLPrefix, "image-url-prefix", "", "start of each Label Studio task's image URL (default: Label Studio local files, /data/local-files/?d=FOLDER/)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--out DIR is required")
	}
	var err error
	if opt.Labels, err = e.labels(); err != nil {
		fmt.Fprintln(e.errs, "note: the Label Studio config lists only not_a_leaf and unsure:", err)
	}
	rep, err := e.st.Export(ctx, *dir, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "wrote %s: %d labelled images in class folders, %d others in %s/, %d records in %s, Label Studio tasks in %s/ (%.1f MB)\n",
		*dir, rep.Labelled, rep.Unlabelled, fieldset.UnlabelledDir, rep.Records, fieldset.RecordsFile, fieldset.LabelStudio, float64(rep.Bytes)/(1<<20))
	return nil
}

func (e *samplesEnv) imp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	by := fs.String("by", "labelstudio", "who the labels are recorded as (undo by this name takes the import back)")
	overwrite := fs.Bool("overwrite", false, "replace labels given here that Label Studio's disagree with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("give the Label Studio JSON export file")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	allowed, err := e.labels()
	if err != nil {
		return fmt.Errorf("the model's labels: %w", err)
	}
	rep, err := e.st.ImportLabelStudio(ctx, f, allowed, *by, *overwrite)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "imported: %d labels applied, %d unchanged, %d conflicts, %d unknown samples, %d unknown labels, %d tasks without a label\n",
		rep.Applied, rep.Unchanged, len(rep.Conflicts), len(rep.Unknown), len(rep.BadLabels), rep.NoLabel)
	for _, c := range rep.Conflicts {
		fmt.Fprintln(e.out, "  conflict:", c)
	}
	for _, b := range rep.BadLabels {
		fmt.Fprintln(e.out, "  not a label of this model:", b)
	}
	if len(rep.Conflicts) > 0 {
		fmt.Fprintln(e.out, "conflicting samples kept their label here; --overwrite takes Label Studio's")
	}
	return nil
}

func (e *samplesEnv) delete(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	unsure := fs.Bool("unsure", false, "every sample labelled unsure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids := fs.Args()
	if *unsure {
		list, err := e.st.List(ctx, samples.Filter{Label: fieldset.Unsure})
		if err != nil {
			return err
		}
		for _, s := range list {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) == 0 {
		return errors.New("give sample ids, or --unsure")
	}
	n, err := e.st.Delete(ctx, ids)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "deleted %d samples\n", n)
	return nil
}
