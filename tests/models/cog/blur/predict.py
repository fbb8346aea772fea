import tempfile

from cog import BasePredictor, Input, Path
from PIL import Image, ImageFilter


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="Image to blur"),
        blur: float = Input(description="Blur radius", default=2.0, ge=0),
    ) -> Path:
        img = Image.open(str(image))
        if img.mode not in ("RGB", "RGBA", "L"):
            img = img.convert("RGB")
        blurred = img.filter(ImageFilter.GaussianBlur(blur))
        out_path = Path(tempfile.mkdtemp()) / "out.png"
        blurred.save(str(out_path))
        return out_path
