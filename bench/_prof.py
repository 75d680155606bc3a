import torch, sys
from torch.profiler import profile, ProfilerActivity
from generator.models import load_model
from generator.methods.attribution import make
lm = load_model('efficientnet_lite0')
x = torch.rand(4,3,224,224, generator=torch.Generator().manual_seed(0))
t = torch.tensor([1,2,3,4])
for name in sys.argv[1:]:
    m = make(name, lm)
    m.attribute(x, t)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m.attribute(x, t)
    print(name)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
