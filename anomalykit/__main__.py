"""``python -m anomalykit ...`` runs the ``anomalykit`` command (torchrun: ``-m anomalykit run ...``)."""
from .cli import main

if __name__ == "__main__":
    main()
