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

from dygan_tf.config.flags import add_workers_flag, non_negative_int
from dygan_tf.data.anatomy import ANATOMIES
from dygan_tf.data.phantom import LAYOUTS, VERSIONS, make_phantom
from dygan_tf.utils.cli import ArgumentParser, command, keywords_of


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
    hgg, lgg, where = make_phantom(**keywords_of(make_phantom, args))
    print(f"Wrote {hgg} HGG + {lgg} LGG phantom {args.phantom} cases under {where}")


cli = command(main)


if __name__ == "__main__":
    cli()
