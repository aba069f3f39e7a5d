"""`eclip export`: a trained model for use outside eclip (ONNX with its preprocessing contract, or a folder that
transformers loads, with a model card)."""

from __future__ import annotations

from pathlib import Path


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="a trained model as ONNX graphs or a Hugging Face folder with a model card",
        description="Write the model of RUN_DIR into --out: --format onnx gives image_encoder.onnx and "
                    "text_encoder.onnx (dynamic batch and sequence axes) with tokenizer.json and contract.json (the "
                    "preprocessing they expect); --format hf gives a folder that transformers' AutoModel loads "
                    "(one CLIPModel where the model is a standard CLIP, else tower by tower) and a model card "
                    "README.md. See docs/models.md.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished `eclip train` run")
    p.add_argument("--format", required=True, choices=["onnx", "hf"], help="onnx or hf")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")
    p.add_argument("--report", type=Path, metavar="REPORT_DIR",
                   help="an `eclip eval` output of this run: its headline table and data go into the model card")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from eclip.export import export

    export(args.run_dir, args.out, args.format, args.report)
    print(f"exported {args.run_dir} as {args.format} -> {args.out}")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_export]
