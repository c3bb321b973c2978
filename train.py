"""Train an inversion network: ``python train.py`` runs the embedded default (HOG, bundled photos).

See README.md; ``python train.py --help`` lists every option, ``--config configs/hog.yaml``
loads the paper-scale settings.
"""

from featinv.cli import main

if __name__ == "__main__":
    main()
