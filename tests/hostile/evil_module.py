"""The code-execution payload of the untrusted-file tests: a TorchScript module whose __setstate__
creates a file. LibTorch's TorchScript loader (what SEDenseNet 0.1 used for its checkpoints) runs
it while reading the archive; SEDenseNet must refuse the file without reading it that way."""
from typing import Tuple

import torch


class Payload(torch.nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.x = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return (self.marker, self.x, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.marker = state[0]
        # Creates (or truncates and maps) the marker file: a write to disk chosen by the file.
        self.x = torch.from_file(state[0], True, 16)
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write(path: str, marker: str) -> None:
    torch.jit.script(Payload(marker)).save(path)
