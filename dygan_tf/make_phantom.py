"""A BraTS-shaped phantom built offline from a brain template.

    dygan-make-phantom --out DIR --cases 10 --seed 0 [--workers 2]
        [--phantom v1|v2] [--anatomy mni152|colin27] [--template T1.nii.gz]
        [--layout brats2019|brats2020|brats2023]

Writes DIR/MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz
(240 x 240 x 155, int16 images, uint8 seg, 1 mm) and name_mapping.csv; `--layout
brats2020` flat case folders, `brats2023` `<ID>/<ID>-{t1n,t1c,t2w,t2f,seg}.nii.gz` with
the enhancing tumour labelled 3. v1 (default): a smoothly deformed template with
tissue-contrast lookups, a random tumour, a bias field and Rician noise. v2: simulated
from MR physics (docs/results/benchmark-v2.md), each case's drawn parameters in
`<ID>_phantom.json`. The same seed gives byte-identical files.
"""

import contextlib
import os

from dygan_tf.config.flags import add_workers_flag, non_negative_int
from dygan_tf.data.anatomy import ANATOMIES
from dygan_tf.data.cases import TRAINING_FOLDER
from dygan_tf.data.phantom import LAYOUTS, VERSIONS, PhantomSpec, build_phantom, split_grades
from dygan_tf.utils.cli import ArgumentParser, command
from dygan_tf.utils.errors import UserError, for_flag


def main(argv=None):
    parser = ArgumentParser(prog="dygan-make-phantom", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cases", type=int, help="total cases, split 259:76 HGG:LGG")
    parser.add_argument("--hgg", type=int, help="number of HGG cases")
    parser.add_argument("--lgg", type=int, help="number of LGG cases")
    parser.add_argument("--seed", type=non_negative_int, default=0)  # numpy's seeds are >= 0
    add_workers_flag(parser)
    parser.add_argument("--phantom", choices=VERSIONS, default="v1", help="phantom version")
    parser.add_argument("--anatomy", choices=ANATOMIES, default="mni152")
    parser.add_argument(
        "--template", help="brain-extracted T1 for --anatomy colin27 (default: mricron-data's)"
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="brats2019")
    args = parser.parse_args(argv)
    if args.template and args.anatomy != "colin27":
        raise UserError("--template: only with --anatomy colin27")
    if args.cases is not None and (args.hgg is not None or args.lgg is not None):
        raise UserError("dygan-make-phantom: pass either --cases or --hgg/--lgg, not both")
    if args.cases is not None:
        hgg, lgg = split_grades(args.cases)
    elif args.hgg is not None and args.lgg is not None:
        hgg, lgg = args.hgg, args.lgg
    else:
        raise UserError("dygan-make-phantom: expected --cases N or both --hgg N and --lgg M")
    if hgg < 0 or lgg < 0 or hgg + lgg == 0:
        raise UserError(
            f"dygan-make-phantom: expected non-negative counts with at least one "
            f"case, found --hgg {hgg} --lgg {lgg}"
        )
    spec = PhantomSpec(args.phantom, args.anatomy, args.template, args.layout)
    with for_flag("--template") if args.template else contextlib.nullcontext():
        build_phantom(args.out, hgg, lgg, seed=args.seed, workers=args.workers, spec=spec)
    where = os.path.join(args.out, TRAINING_FOLDER) if args.layout == "brats2019" else args.out
    print(f"Wrote {hgg} HGG + {lgg} LGG phantom {args.phantom} cases under {where}")


cli = command(main)


if __name__ == "__main__":
    cli()
