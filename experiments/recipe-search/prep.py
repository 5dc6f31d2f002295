"""Decode the CIFAR-10 JPEGs once into .cache/recipe-search/cifar.npz (uint8 [N, 32, 32, 3] + labels)."""
import numpy as np, os
from PIL import Image
root='.cache/case-study/cifar10'
out={}
for split in ['train','test']:
    classes=sorted(os.listdir(f'{root}/{split}'))
    X=[];Y=[]
    for ci,c in enumerate(classes):
        for f in sorted(os.listdir(f'{root}/{split}/{c}')):
            X.append(np.asarray(Image.open(f'{root}/{split}/{c}/{f}').convert('RGB')));Y.append(ci)
    out[f'x_{split}']=np.stack(X);out[f'y_{split}']=np.array(Y)
os.makedirs('.cache/recipe-search', exist_ok=True)
np.savez('.cache/recipe-search/cifar.npz',**out)
print({k:v.shape for k,v in out.items()})
