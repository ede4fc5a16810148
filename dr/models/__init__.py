"""The networks and their inference pipelines, diffusers style: forward renderer, inverse renderer, env encoder;
from_pretrained / save_pretrained; no training code. torch and diffusers are imported only below this package,
dr/train and dr/labeling."""
