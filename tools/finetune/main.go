// Command finetune turns an ImageNet-trained AlexNet into a Leafwatch model:
// it replaces the last layer by one sized for the dataset, resets the
// penultimate layer, and resumes training. Subcommands: synth, import,
// export, train, eval, predict, pull, keygen, sign.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/leafwatch/leafwatch/internal/buildinfo"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/onnx"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
)

const usage = `Usage: finetune COMMAND [OPTIONS]

Make and remake the Leafwatch leaf-disease model: import ImageNet-trained
AlexNet weights, replace the last layer by one for your classes, train,
evaluate, and export. "finetune COMMAND -h" lists a command's options.

Commands:
  finetune synth   --out DIR [--per-class N] [--labels A,B,…] [--seed S]  draw synthetic PlantVillage-like leaves
  finetune import  --from WEIGHTS.{onnx,safetensors} [--variant V] --out CKPT   ImageNet weights to a checkpoint
  finetune export  --model CKPT --out MODEL.onnx                 checkpoint to ONNX (TensorRT, onnxruntime, OpenCV DNN)
  finetune train   --data DIR --out DIR [--base CKPT] [options]  fine-tune (see finetune train -h)
  finetune train   --resume DIR/state.safetensors [--epochs N]   continue (or extend) a run with its settings
  finetune train   --data DIR --field EXPORT [--field EXPORT…] --out DIR [options]
                   train on PlantVillage and a greenhouse's labelled samples
  finetune eval    --model CKPT --data DIR --out DIR            accuracy, macro-F1, confusion matrix
                   (an export folder: every labelled sample, against the model that kept them)
  finetune pull    http://DEVICE:8080 --token-file F --out DIR  fetch a device's labelled samples (resumable, checked)
  finetune predict --model CKPT [--top K] [--regions leaves|tiles] [--tile-rows R --tile-cols C] [--precision P] IMAGE...
                   classify files as leafwatchd would
  finetune keygen  [--password-file F] NAME                    a signing key pair: NAME.key (private), NAME.pub (for devices)
  finetune sign    --key NAME.key [--summary TEXT] CKPT       write CKPT's manifest and its signature beside it (for fleet updates)

Options:
  --help       show this help and exit
  --version    print the version and exit

Documentation: /usr/share/doc/leafwatch/tools/finetune/README.md
`

func main() {
	cpu.TuneBLAS() // may re-exec with OPENBLAS_CORETYPE set
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "synth":
		err = cmdSynth(os.Args[2:])
	case "import":
		err = cmdImport(os.Args[2:])
	case "train":
		err = cmdTrain(ctx, os.Args[2:], log)
	case "eval":
		err = cmdEval(ctx, os.Args[2:])
	case "predict":
		err = cmdPredict(ctx, os.Args[2:])
	case "pull":
		err = cmdPull(ctx, os.Args[2:], log)
	case "export":
		err = cmdExport(os.Args[2:])
	case "keygen":
		err = cmdKeygen(os.Args[2:])
	case "sign":
		err = cmdSign(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	case "-version", "--version", "version":
		fmt.Println("finetune", buildinfo.String())
		return
	default:
		err = fmt.Errorf("unknown subcommand %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "finetune:", err)
		if errors.Is(err, train.ErrInterrupted) || errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func cmdSynth(args []string) error {
	fs := flag.NewFlagSet("synth", flag.ExitOnError)
	out := fs.String("out", "", "folder to write <class>/*.jpg into")
	per := fs.Int("per-class", 20, "images per class")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same images)")
	classes := fs.Int("classes", 38, "how many PlantVillage classes (the first N)")
	names := fs.String("labels", "", "the classes by name, comma-separated (instead of --classes)")
	fs.Parse(args)
	if *out == "" {
		return errors.New("synth: --out is required")
	}
	labels := model.PlantVillageLabels()
	if *names != "" {
		labels = strings.Split(*names, ",")
		if len(labels) < 2 {
			return errors.New("synth: --labels needs at least two classes")
		}
		return train.WriteSynth(*out, labels, *per, *seed)
	}
	if *classes < 2 || *classes > len(labels) {
		return fmt.Errorf("synth: --classes must be 2..%d", len(labels))
	}
	return train.WriteSynth(*out, labels[:*classes], *per, *seed)
}

func cmdImport(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	from := fs.String("from", "", "ONNX AlexNet (torchvision export or BVLC model zoo), or a torchvision state dict saved with safetensors")
	variant := fs.String("variant", "torchvision", "for state dicts: torchvision or bvlc (ONNX files are recognised)")
	labelsFile := fs.String("labels", "", "optional file with one class label per line")
	out := fs.String("out", "", "checkpoint to write")
	fs.Parse(args)
	if *from == "" || *out == "" {
		return errors.New("import: --from and --out are required")
	}
	v, err := model.ParseVariant(*variant)
	if err != nil {
		return err
	}
	var labels []string
	if *labelsFile != "" {
		if labels, err = readLabels(*labelsFile); err != nil {
			return err
		}
	}
	var m *model.Model
	if strings.EqualFold(filepath.Ext(*from), ".onnx") {
		m, err = onnx.Import(*from)
		if err == nil && labels != nil {
			if len(labels) != m.Spec.Classes {
				return fmt.Errorf("import: %d labels for a %d-way model", len(labels), m.Spec.Classes)
			}
			m.Meta.Labels = labels
		}
	} else {
		m, err = onnx.ImportStateDict(*from, v, labels)
	}
	if err != nil {
		return err
	}
	if err := m.Save(*out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s AlexNet, %d classes, %d×%d input, version %s\n", *out, m.Spec.Variant, m.Spec.Classes, m.Spec.InputSize, m.Spec.InputSize, m.Meta.Version)
	for _, n := range m.Notes {
		fmt.Println("note:", n)
	}
	return nil
}

// readLabels reads one label per line. Blank lines and repeats are refused
// with their line number: either would shift or merge classes silently.
func readLabels(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	text := strings.TrimRight(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	var labels []string
	seen := map[string]int{}
	for i, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
			return nil, fmt.Errorf("labels file %s: line %d is empty; give one label per line, no blank lines", path, i+1)
		case seen[l] > 0:
			return nil, fmt.Errorf("labels file %s: line %d repeats %q from line %d", path, i+1, l, seen[l])
		}
		seen[l] = i + 1
		labels = append(labels, l)
	}
	return labels, nil
}

func cmdExport(args []string) error {
	fs := flag.NewFlagSet("export", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	out := fs.String("out", "", "ONNX file to write")
	fs.Parse(args)
	if *ckpt == "" || *out == "" {
		return errors.New("export: --model and --out are required")
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	if err := onnx.Save(m, *out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Printf("wrote %s: opset 13, input \"input\" [batch,3,%d,%d], output \"probabilities\" [batch,%d]\n", *out, m.Spec.InputSize, m.Spec.InputSize, m.Spec.Classes)
	return nil
}
