"""Evaluate trained decoders and the optimization baseline on the same images.

    python evaluate.py --checkpoint checkpoints/hog/best.ckpt --baseline --out evaluation

See README.md ("Evaluating") and ``python evaluate.py --help``.
"""

from featinv.cli.evaluate import main

if __name__ == "__main__":
    main()
