"""A few steps of a tiny model, on the GPU when there is one."""
import torch
from tqdm import tqdm


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("torch", torch.__version__, "CUDA", torch.version.cuda, "device", device)
    model = torch.nn.Linear(32, 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(512, 32, device=device)
    y = x.sum(dim=1, keepdim=True)
    for _ in tqdm(range(100)):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    print("loss", float(loss))


if __name__ == "__main__":
    main()
